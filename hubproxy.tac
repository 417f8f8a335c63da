# twistd -ny hubproxy.tac
#
# Runs hubproxy from a checkout or an install, configured like the plugin:
# $HUBPROXY_CONFIG, else ./config.toml, else built-in defaults.  Set
# HUBPROXY_LOG_FORMAT=json for one JSON object per log line.
import os
import sys

from twisted.application import service

from hubproxy.tap import Options, makeService

options = Options()
options.parseOptions([] if not os.environ.get("HUBPROXY_CONFIG") else ["--config", os.environ["HUBPROXY_CONFIG"]])

application = service.Application("hubproxy")
if os.environ.get("HUBPROXY_LOG_FORMAT") == "json":
    from twisted.logger import ILogObserver

    from hubproxy.logs import json_observer

    application.setComponent(ILogObserver, json_observer())
makeService(options).setServiceParent(application)
