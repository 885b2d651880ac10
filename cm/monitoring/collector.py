"""The background collector: every interval, read each target's counters and store one round of samples.

Run as ``python -m cm.monitoring.collector HOME`` by ``cm monitor start``
(see :mod:`cm.monitoring.daemon`); it reads its targets from
``HOME/monitor/collector.json`` (taking over what `start` staged), writes its
pid file, and on SIGTERM or SIGINT finishes the round in flight, removes the
pid file and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cm.monitoring.daemon import take_settings
from cm.monitoring.sample import between
from cm.monitoring.store import Store, path_in
from cm.provider import VMStats

PRUNE_EVERY = 300.0  # seconds between retention sweeps


class Collector:
    """Samples the targets of one user directory into its store."""

    def __init__(self, home: Path, settings: dict[str, Any], log: Any = sys.stderr) -> None:
        from cm.context import Context

        self.home = Path(home)
        self.interval = float(settings["interval"])
        self.retention = float(settings["retention"])
        self.log = log
        self.ctx = Context(out=self._say, err=self._say)
        self.store = Store(path_in(self.home))
        self.stop = threading.Event()
        self.last: dict[tuple[str, str, str], VMStats] = {}
        from cm.monitoring.sources import CloudSource

        self.sources = [CloudSource(self.ctx, cloud, names, self.home, self._say)
                        for cloud, names in settings["targets"].items()]

    def _say(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}", file=self.log, flush=True)

    def round(self) -> int:
        """Read every source once and store the samples; return how many were stored."""
        rows = []
        for source in self.sources:
            try:
                vms, hosts = source.read()
            except Exception as exc:  # a cloud that fails now may answer at the next round
                self._say(f"cloud '{source.cloud}': {exc}")
                continue
            # a host is kept under its cloud: `tune` looks among the cloud's hosts for a less loaded one
            for kind, stats in [("vm", s) for s in vms] + [("host", h) for h in hosts]:
                key = (kind, source.cloud, stats.name)
                before, self.last[key] = self.last.get(key), stats
                sample = between(before, stats) if before else None
                if sample is not None:
                    rows.append((self.store.node_id(stats.name, kind, source.cloud,
                                                    stats.host if kind == "vm" else ""), sample))
        return self.store.add(rows) if rows else 0

    def run(self) -> None:
        next_prune = 0.0
        tick = time.monotonic()
        while not self.stop.is_set():
            self.round()
            if time.monotonic() >= next_prune:
                self.store.prune(self.retention)
                next_prune = time.monotonic() + PRUNE_EVERY
            tick += self.interval
            delay = tick - time.monotonic()
            if delay < 0:  # a slow round: skip the ticks it overran rather than bunch up
                tick = time.monotonic()
                delay = 0
            self.stop.wait(delay)

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.ctx.close()
        self.store.close()


def main(argv: list[str]) -> int:
    home = Path(argv[0])
    os.environ["CM_HOME"] = str(home)
    monitor = home / "monitor"
    settings = take_settings(monitor)
    collector = Collector(home, settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: collector.stop.set())
    pid_file = monitor / "collector.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    collector._say(f"collector {os.getpid()} started: every {collector.interval:g} s")
    try:
        collector.run()
    finally:
        collector.close()
        if pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
        collector._say("collector stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
