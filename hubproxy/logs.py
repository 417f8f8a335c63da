# -*- test-case-name: hubproxy.test.test_logs -*-
"""
Log output formats.

hubproxy logs through L{twisted.logger} with named fields (access events
carry C{log_access=True} plus client, method, uri, code, bytes).  For log
shippers, C{twistd --logger hubproxy.logs.json_observer -n hubproxy} (or
C{HUBPROXY_LOG_FORMAT=json} with the .tac) writes one JSON object per line:
twisted's own JSON observer, with a newline instead of the RFC 7464 record
separator that most shippers do not expect.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer(stream: IO[str] | None = None) -> ILogObserver:
    """
    A zero-argument-callable-friendly JSON-lines observer (stdout).
    """
    return jsonFileLogObserver(stream if stream is not None else sys.stdout, recordSeparator="")
