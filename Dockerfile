# hubproxy container image.
#
#   docker build -t hubproxy .
#   docker run -d -p 5000:5000 -v $PWD/config.toml:/etc/hubproxy/config.toml:ro hubproxy
#
# The image runs as an unprivileged user (uid 10001), logs to stdout, and
# stops gracefully on SIGTERM (transfers in flight get [server] shutdownGrace
# seconds; give `docker stop -t` more than that).  See deploy/ for systemd,
# Kubernetes and reverse-proxy examples.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.rst ./
COPY hubproxy ./hubproxy
COPY twisted ./twisted
# Install, then build Twisted's plugin cache while we are still root (the
# runtime user cannot write to site-packages).
RUN pip install . \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && cd / && rm -rf /src \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin hubproxy

COPY config.toml /etc/hubproxy/config.toml

WORKDIR /
USER 10001:10001
EXPOSE 5000
STOPSIGNAL SIGTERM

# No curl in the slim image: ask /ready with the Python we have.  Follows
# SERVER_PORT; a [server] tls listener needs an https:// URL here instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SERVER_PORT', '5000'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/ready' % port, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["twistd", "-n", "--pidfile=", "hubproxy"]
CMD ["--config", "/etc/hubproxy/config.toml"]
