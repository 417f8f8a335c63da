"""
Run the whole test suite under trial and end with ``N passed, N failed``.

    python -m hubproxy.test.run [trial arguments]

Trial's own summary (``PASSED (successes=N)``) is printed first; the last
line restates it so a run that executed nothing is visible at a glance.
With ``CI=true`` a skipped test counts as a failure: every component the
integration tests need must be installed there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def summarise(output: str) -> dict[str, int]:
    """
    Read trial's closing ``PASSED (...)`` / ``FAILED (...)`` line.
    """
    counts = {"successes": 0, "failures": 0, "errors": 0, "skips": 0, "expectedFailures": 0, "unexpectedSuccesses": 0}
    found = False
    for line in output.splitlines():
        m = re.match(r"^(PASSED|FAILED) \((.*)\)\s*$", line.strip())
        if m:
            found = True
            for part in m.group(2).split(","):
                key, _, value = part.strip().partition("=")
                if key in counts and value.isdigit():
                    counts[key] = int(value)
    counts["found"] = int(found)
    return counts


def main(argv: list[str]) -> int:
    jobs = os.environ.get("HUBPROXY_TEST_JOBS", "2")
    args = argv or ["hubproxy"]
    cmd = [sys.executable, "-m", "twisted.trial", "--temp-directory", os.environ.get("HUBPROXY_TRIAL_TEMP", "_trial_temp")]
    if jobs != "1":
        cmd += ["-j", jobs]
    cmd += args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    rc = proc.wait()
    counts = summarise("".join(lines))
    passed = counts["successes"] + counts["expectedFailures"]
    failed = counts["failures"] + counts["errors"] + counts["unexpectedSuccesses"]
    skipped = counts["skips"]
    in_ci = os.environ.get("CI") == "true"
    if in_ci and skipped:
        failed += skipped
        print(f"CI=true: {skipped} skipped test(s) counted as failures")
    if not counts["found"]:
        failed = max(failed, 1)
        print("trial printed no summary: treating the run as failed")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped and not in_ci else ""))
    if passed == 0:
        return 1
    return 0 if failed == 0 and rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
