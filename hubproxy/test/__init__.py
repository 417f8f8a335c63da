"""
Tests for hubproxy.

Unit tests run the resource tree in memory; ``hubproxy.test.integration``
runs real servers and clients on loopback.
"""

from hypothesis import HealthCheck, settings

# Deterministic, bounded property tests (Twisted's own trial profile is the
# model): the same examples on every run, no deadline flakiness on 2 cores.
settings.register_profile(
    "hubproxy",
    deadline=None,
    derandomize=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("hubproxy")
