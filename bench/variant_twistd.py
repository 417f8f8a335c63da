"""
C{twistd} with one of hubproxy's speed-ups undone at start, so that
C{bench/run} measures each change's before and after on the same machine in
the same run (the "Speed-ups made" table of bench/results/latest.md).

This is a measuring tool, not product code: each patch below restores the
behaviour hubproxy had before the change, as closely as a patch can.
Select with C{HUBPROXY_BENCH_VARIANT} (comma-separated):

 - C{upstream-reads-64k}: upstream TCP connections read 64 KiB per
   C{recv()} (Twisted's default) instead of
   L{hubproxy.upstream.endpoints.UPSTREAM_READ_SIZE};
 - C{per-event-access-log}: one L{twisted.logger} event per request,
   formatted and written by twistd's log observer (a C{write()} and
   C{flush()} per line), instead of L{hubproxy.logs.AccessLog}'s batches.

Usage (as twistd): C{python bench/variant_twistd.py -n hubproxy --config F}
"""

import os
import sys


def _upstream_reads(size):
    from hubproxy.upstream import endpoints

    endpoints.UPSTREAM_READ_SIZE = size


def _per_event_access_log():
    from twisted.logger import Logger

    from hubproxy import site

    access = Logger(namespace="hubproxy.access")

    def log(self, request):
        if self.access_log is None:
            return
        resolved = getattr(request, "_hubproxy_client", None)
        access.info(
            '{client} "{method} {uri} {proto}" {code} {bytes}',
            log_access=True,
            client=str(resolved) if resolved else getattr(request.getClientAddress(), "host", "-"),
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1")[:2048],
            proto=request.clientproto.decode("latin-1"),
            code=request.code,
            bytes=request.sentLength,
            user_agent=(request.getHeader(b"user-agent") or b"").decode("latin-1")[:256],
        )

    site.HubproxySite.log = log


def main():
    for name in filter(None, os.environ.get("HUBPROXY_BENCH_VARIANT", "").split(",")):
        if name == "upstream-reads-64k":
            _upstream_reads(64 * 1024)
        elif name == "per-event-access-log":
            _per_event_access_log()
        else:
            raise SystemExit("unknown HUBPROXY_BENCH_VARIANT %r" % name)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd"] + sys.argv[1:]
    run()


if __name__ == "__main__":
    main()
