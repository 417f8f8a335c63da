"""
twistd plugin dropin: C{twistd -n hubproxy --config config.toml}.

Imports nothing heavy: twistd scans every dropin for C{--help}.  There is
deliberately no C{twisted/__init__.py} or C{twisted/plugins/__init__.py} in
this project (they would shadow Twisted's own plugin package).
"""

from twisted.application.service import ServiceMaker

hubproxy = ServiceMaker(
    "hubproxy",
    "hubproxy.tap",
    "Registry mirror and GitHub / Hugging Face download proxy.",
    "hubproxy",
)
