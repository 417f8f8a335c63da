#!/usr/bin/env bash
# Install the Debian packages hubproxy's integration tests need.
#
# Why: the integration tests run real upstreams (CNCF registry, nginx +
# git-http-backend, SOCKS5/HTTP proxies) and real clients (dockerd,
# containerd/ctr, podman, skopeo, git, curl) on loopback; CI machines start
# fresh, so everything must be installed by the project's own files.  In CI
# (CI=true) a missing program makes the tests FAIL, not skip
# (hubproxy/test/integration/fixtures.py: require()).
#
# Run as root on Debian 12.  Idempotent: when every package is already
# installed it does nothing (no apt-get update, so a re-run is fast and works
# without the package mirror).  A policy-rc.d that exits 101 keeps package
# postinst scripts from starting services (docker, containerd, nginx,
# tinyproxy): the tests start their own private instances, by PID.
set -euo pipefail

PACKAGES=(
  # Docker Hub look-alike and image tooling
  docker-registry skopeo
  # container clients
  docker.io containerd runc podman conmon crun uidmap fuse-overlayfs containernetworking-plugins
  iptables
  # GitHub look-alike: nginx + fcgiwrap + git smart HTTP
  nginx-light fcgiwrap git
  # upstream proxies
  microsocks tinyproxy
  # HTTP clients and load tools
  curl wget wrk nghttp2-client jq ca-certificates
  # unshare/mount for the resolv.conf guard around dockerd/ctr/podman
  util-linux mount
  # the reverse-proxy example in deploy/caddy, run for real
  caddy
  # headless browser for the web UI tests (driven over --remote-debugging-pipe
  # with the standard library: no Playwright, no browser download)
  chromium
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Never let a postinst start a service.
cat > /usr/sbin/policy-rc.d <<'EOF'
#!/bin/sh
exit 101
EOF
chmod 0755 /usr/sbin/policy-rc.d

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
apt_update() {
  apt-get -q update -o Acquire::Retries=3
}
apt_update || { sleep 5; apt_update; }
apt-get -q install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${PACKAGES[@]}"

# Verify the programs the fixtures look for are really there.
for exe in docker-registry skopeo podman dockerd docker containerd ctr runc nginx fcgiwrap git \
           microsocks tinyproxy curl wrk jq nghttp unshare chromium caddy; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$exe" >/dev/null; then
    echo "install-deps.sh: $exe still missing" >&2
    exit 1
  fi
done
test -x /usr/lib/git-core/git-http-backend || { echo "install-deps.sh: git-http-backend missing" >&2; exit 1; }
echo "install-deps.sh: done"
