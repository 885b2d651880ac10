"""Guests for the local OpenStack API server (tests/osapi), which runs none: each server that goes
ACTIVE becomes a host of a ``tests.infra.netns.Lab`` at the server's fixed address, where the
server's user-data runs as cloud-init would run a ``#!`` script; a server deleted (or gone to
any other state) loses that host and everything its user-data started.

Usage::

    from tests.infra.cloud_guests import CloudGuests

    with CloudGuests(fake, lab, network="slurmnet", private=[Path("/tmp/x/munge")]) as guests:
        ...                      # cm creates servers on ``fake``; their user-data runs in ``lab``
        guests.booted            # names of the servers that ran their user-data, in order
        guests.running()         # names of the servers whose guest runs now
        guests.output("vm1")     # what the user-data printed

A guest takes only what the cloud gives it: its fixed address on ``network`` (what DHCP would
give) and its user-data.  It runs in its own network namespace (hostname = the server's name) and a
private mount namespace with empty tmpfs over /run, /etc/slurm, /etc/munge and the ``private``
directories (e.g. the controller's munge socket directory, which a guest's munged would replace),
as on a fresh VM.  A thread looks at the cloud every 0.2 s.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.infra.netns import Lab

FRESH = ("/run", "/etc/slurm", "/etc/munge")   # what a fresh VM has of its own


class CloudGuests:
    """Plays the guests of a fake OpenStack cloud inside a Lab (see the module docstring)."""

    def __init__(self, fake, lab: Lab, network: str, private: list[Path] | None = None,
                 interval: float = 0.2) -> None:
        self.fake, self.lab, self.network = fake, lab, network
        self.private = [str(p) for p in private or []]
        self.interval = interval
        self.guests: dict[str, str] = {}      # server id -> lab host name
        self.booted: list[str] = []
        self.errors: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="cloud-guests-"))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="cloud-guests", daemon=True)

    def running(self) -> list[str]:
        return sorted(self.guests.values())

    def output(self, name: str) -> str:
        path = self.tmp / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def _watch(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._look()
            except Exception as exc:   # noqa: BLE001  a test asserts on errors; the thread goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(self.interval)

    def _look(self) -> None:
        servers = {s["id"]: s for s in self.fake.servers()}
        for sid, server in servers.items():
            if sid not in self.guests and _up(server):
                self._boot(server)
        for sid in list(self.guests):
            if sid not in servers or not _up(servers[sid]):
                self._halt(sid)

    def _boot(self, server: dict) -> None:
        """Run the server's user-data at its fixed address, as the VM's first boot would."""
        addresses = self.fake.fixed_addresses(server["id"]).get(self.network, [])
        if not addresses or not server.get("user_data"):
            return   # not on the lab's network, or nothing to run: a VM this lab cannot play
        name = server["name"]
        script = self.tmp / f"{name}.user-data"
        script.write_bytes(base64.b64decode(server["user_data"]))
        host = self.lab.add_host(name, addresses[0])
        self.guests[server["id"]] = name
        self.booted.append(name)
        mounts = " && ".join(f"mkdir -p {shlex.quote(d)} && mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(d)}"
                             for d in (*FRESH, *self.private))
        with open(self.tmp / f"{name}.out", "ab") as out:
            host.run(["sh", "-c", f"{mounts} && exec sh {shlex.quote(str(script))}"], timeout=120,
                     capture_output=False, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _halt(self, sid: str) -> None:
        """The VM is gone: so is everything its user-data started."""
        self.lab.remove_host(self.guests.pop(sid))

    def __enter__(self) -> "CloudGuests":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        for sid in list(self.guests):
            self._halt(sid)
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def _up(server: dict) -> bool:
    """ACTIVE and not being deleted (Nova keeps a server ACTIVE while it deletes it)."""
    return server.get("status") == "ACTIVE" and server.get("task_state") != "deleting"
