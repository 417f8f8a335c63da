"""
Integration tests: hubproxy against real upstream software on loopback.

The upstreams (CNCF registry + JWT token server standing in for Docker Hub,
nginx + git-http-backend standing in for GitHub, a Hugging Face look-alike,
SOCKS5/HTTP CONNECT proxies) and the real clients (dockerd, containerd's ctr,
podman, skopeo, git, huggingface_hub) are started by L{fixtures}; nothing here
ever leaves 127.0.0.1, because the machines that run these tests have no
internet and must not try to reach it.
"""
