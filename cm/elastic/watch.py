"""Watch the computeset under a burst node: when it ends while the node holds it (it failed, was
cancelled at the centre, or its walltime is over) the node goes DOWN with the reason and its jobs
are requeued (cm.elastic.power.ended), instead of Slurm finding a silent node a SlurmdTimeout later.

One runs detached per node from its resume (cm.detached: ``watch-NODE.pid`` and ``.log`` in the
cluster's state directory); it exits once the node no longer holds that computeset (suspend ended
it) or the computeset has ended and was dealt with.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from cm import detached
from cm.errors import CmError
from cm.elastic import state

MODULE = "cm.elastic.watch"
POLL = 5.0  # seconds between two looks at the computeset (one GET each)


def name(node: str) -> str:
    return f"watch-{node}"


def start(home: Path, cluster: str, node: str, computeset: int) -> int:
    """Watch ``computeset`` under ``node`` (an older watcher of the node is stopped first); its pid."""
    folder = state.directory(home, cluster)
    detached.stop(folder, name(node), MODULE, wait=10)
    return detached.start(folder, name(node), MODULE, [str(home), cluster, node, str(computeset)], home)


def holds(home: Path, cluster: str, node: str, computeset: int) -> bool:
    """Whether the node is still up on that computeset."""
    entry = state.load(home, cluster)["nodes"].get(node, {})
    return bool(entry.get("since")) and entry.get("computeset") == computeset


def watch(home: Path, cluster: str, node: str, computeset: int, stop: threading.Event) -> None:
    from cm.context import Context
    from cm.elastic.nodesource import source_for
    from cm.elastic.power import ended
    from cm.elastic.target import controller

    ctx = Context(out=say, err=say)
    try:
        while holds(home, cluster, node, computeset) and not stop.wait(POLL):
            st = state.load(home, cluster)
            if st["nodes"][node].get("state") != "booted":
                continue
            try:
                if node in ended(ctx, cluster, source_for(ctx, st), controller(st), only=node):
                    say(f"{node}: computeset {computeset} ended; node set DOWN")
                    return
            except CmError as exc:  # the service or slurmctld did not answer: look again later
                say(f"{node}: {exc}")
    finally:
        ctx.close()


def say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}", flush=True)


def main(argv: list[str]) -> int:
    home, cluster, node, computeset = Path(argv[0]), argv[1], argv[2], int(argv[3])
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pid_file = detached.write_pid(state.directory(home, cluster), name(node))
    say(f"watching computeset {computeset} of {node}")
    try:
        watch(home, cluster, node, computeset, stop)
    finally:
        detached.remove_pid(pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
