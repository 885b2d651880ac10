"""What a VM printed on its serial console: the log file virtlogd keeps, or the live console stream."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import libvirt

from cm.errors import ProviderError

_loop_lock = threading.Lock()
_loop_running = False
# Escape sequences guests send to terminals (colours, cursor moves): noise in a log.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc")


def clean(text: str, lines: int = 0) -> str:
    """Readable console text: no carriage returns or terminal escapes; the last ``lines`` if > 0."""
    text = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if lines > 0:
        text = "\n".join(text.splitlines()[-lines:])
    return text


def read_log(path: str) -> str | None:
    """The serial log file's text, or None when this process cannot read it."""
    try:
        return Path(path).read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""  # the VM has not written anything yet
    except OSError:
        return None


def _ensure_event_loop() -> None:
    """Console streams only deliver data while libvirt's event loop runs (in a daemon thread)."""
    global _loop_running
    with _loop_lock:
        if _loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_running = True


def capture(uri: str, name: str, seconds: float) -> str:
    """What the console prints during ``seconds`` (a fresh connection: the event loop must predate it)."""
    _ensure_event_loop()
    conn = libvirt.open(uri)
    chunks: list[bytes] = []
    try:
        dom = conn.lookupByName(name)
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, 0)

        def readable(st: libvirt.virStream, events: int, _opaque: object) -> None:
            if events & libvirt.VIR_STREAM_EVENT_READABLE:
                data = st.recv(65536)
                if isinstance(data, bytes) and data:
                    chunks.append(data)

        stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_HANGUP, readable, None)
        time.sleep(seconds)
        try:
            stream.eventRemoveCallback()
            stream.abort()
        except libvirt.libvirtError:
            pass  # the console went away (the VM stopped): what arrived is the answer
    except libvirt.libvirtError as exc:
        message = (exc.get_error_message() or "").splitlines()[0] if exc.get_error_message() else str(exc)
        raise ProviderError(f"cannot attach to the console of {name}: {message}") from None
    finally:
        conn.close()
    return b"".join(chunks).decode("utf-8", "replace")
