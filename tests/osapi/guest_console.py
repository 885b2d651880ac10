"""What a guest's cloud-init would print last on the console, from the server's user-data.

The test server runs no guest, so its console log is made up; this keeps one part
of it honest for launchers that read it: cloud-init's final stage prints the
user-data's ``final_message`` (with $UPTIME, $TIMESTAMP, $DATASOURCE and $VERSION
filled in) instead of its default "Cloud-init v. ... finished at" line.  Nothing a
guest's scripts would print (runcmd) is simulated.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

VERSION = "23.1.1"
DATASOURCE = "DataSourceOpenStackLocal [net,ver=2]"


def final_message(user_data_b64: str | None, stamp: str, uptime: str) -> str | None:
    """The user-data's final_message with cloud-init's variables filled in, or None if it sets none."""
    if not user_data_b64:
        return None
    try:
        text = base64.b64decode(user_data_b64).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not text.startswith("#cloud-config"):
        return None
    import yaml

    try:
        config: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # cloud-init would not apply a config it cannot parse
    message = config.get("final_message") if isinstance(config, dict) else None
    if not isinstance(message, str):
        return None
    values = {"UPTIME": uptime, "TIMESTAMP": stamp, "DATASOURCE": DATASOURCE, "VERSION": VERSION}
    return re.sub(r"\$\{?(UPTIME|TIMESTAMP|DATASOURCE|VERSION)\}?", lambda m: values[m.group(1)], message)
