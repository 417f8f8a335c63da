-- wrk script for bench/run: a manifest GET by tag as docker sends it.
--
-- wrk's command line cannot set several headers or the method, so this
-- script does, from the environment (bench/run sets these):
--   BENCH_METHOD  request method (default GET).  Not HEAD: wrk 4.1 waits
--                 for a body after a HEAD answer with a Content-Length and
--                 hangs, so bench/run measures HEAD with curl --parallel.
--   BENCH_AUTH    an Authorization header value (the direct registry needs
--                 a Bearer token; hubproxy and the pull-through registry do
--                 not), empty = none
-- No response() callback: defining one makes wrk hand every response to
-- Lua, which would slow the load generator down; wrk itself counts
-- non-2xx/3xx answers and bench/run checks one answer with curl first.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Accept"] = "application/vnd.oci.image.index.v1+json, "
  .. "application/vnd.docker.distribution.manifest.list.v2+json, "
  .. "application/vnd.oci.image.manifest.v1+json, "
  .. "application/vnd.docker.distribution.manifest.v2+json"
wrk.headers["User-Agent"] = "hubproxy-bench/wrk"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
