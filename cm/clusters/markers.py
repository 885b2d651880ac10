"""What a node prints on its console, read by cm through the provider's console_log.

A recipe's user-data prints these lines on /dev/console (its cloud-init
``final_message`` carries the ready marker; a readiness script that gives up
prints the failure marker first, which wins):

    CM-CONFIGURED             services configured (optional)
    CM-READY ...              the node's readiness check passed
    CM-FAILED: why            configuration or the readiness check failed

cloud-init's own "Cloud-init v. X finished at" line also counts as configured.
"""

from __future__ import annotations

import re

READY, FAILED, CONFIGURED = "CM-READY", "CM-FAILED", "CM-CONFIGURED"
_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def read(console: str, ready_marker: str = READY) -> tuple[str, str]:
    """('failed', why) | ('ready', '') | ('configured', '') | ('', '') from a console log."""
    configured = False
    ready = False
    for raw in console.splitlines():
        line = _ANSI.sub("", raw)
        at = line.find(FAILED)
        if at >= 0:
            why = line[at + len(FAILED):].lstrip(":").strip()
            return "failed", why or "its readiness check failed"
        if ready_marker in line:
            ready = True
        if CONFIGURED in line or _FINISHED.search(line):
            configured = True
    if ready:
        return "ready", ""
    return ("configured", "") if configured else ("", "")
