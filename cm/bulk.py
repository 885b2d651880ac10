"""Bulk operations: run one verb on many targets in parallel, carry on past
single failures, and end with a per-target result and a summary."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cm.errors import CmError

MAX_WORKERS = 64
# Set on Ctrl-C so calls that only wait (polling for a state) stop at once.
CANCELLED = threading.Event()


@dataclass
class Outcome:
    name: str
    ok: bool
    message: str = ""
    value: Any = None


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (stderr); silent when piped or for one target."""
    if total < 2 or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.progress import Progress

    from rich.console import Console

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


@contextmanager
def waiting(label: str) -> Iterator[None]:
    """A spinner with ``label`` on a terminal (stderr) during a long wait; nothing when piped."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(label):
        yield


def run_each(names: list[str], action: Callable[[str], Any], label: str,
             on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Call ``action(name)`` for every name in parallel; never raise for one target.

    ``on_done`` runs in the calling thread as each target finishes, so results
    (mirror writes) are kept even if the user interrupts the rest.  On Ctrl-C,
    targets not yet started are dropped and those in flight are waited for and
    recorded (a second Ctrl-C abandons them), then KeyboardInterrupt goes on up.
    """
    names = list(dict.fromkeys(names))  # one action per target, even if named twice
    CANCELLED.clear()
    outcomes: dict[str, Outcome] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(names))))
    futures: dict[Future[Any], str] = {}

    def finish(future: Future[Any]) -> None:
        outcome = _outcome(futures[future], future)
        if on_done and outcome.ok:
            try:
                on_done(outcome)
            except CmError as exc:  # e.g. the mirror could not record it: that target failed
                outcome = Outcome(outcome.name, False, str(exc), outcome.value)
        outcomes[outcome.name] = outcome

    try:
        with progress(label, len(names)) as advance:
            futures.update({pool.submit(action, n): n for n in names})
            for future in as_completed(futures):
                finish(future)
                advance()
    except KeyboardInterrupt:
        CANCELLED.set()
        in_flight = [f for f in futures if not f.cancel() and f not in _done(outcomes, futures)]
        if in_flight:
            print(f"cm: interrupted; waiting for {len(in_flight)} call(s) in flight to finish "
                  "(Ctrl-C again to abandon them)", file=sys.stderr)
            try:
                for future in as_completed(in_flight):
                    finish(future)
            except KeyboardInterrupt:
                pass
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [outcomes[n] for n in names]


def _done(outcomes: dict[str, Outcome], futures: dict[Future[Any], str]) -> set[Future[Any]]:
    return {f for f, name in futures.items() if name in outcomes}


def _outcome(name: str, future: Future[Any]) -> Outcome:
    try:
        return Outcome(name, True, value=future.result())
    except CmError as exc:
        return Outcome(name, False, str(exc))
    except Exception as exc:  # one target's unexpected failure must not stop the rest
        return Outcome(name, False, f"{type(exc).__name__}: {exc}")


def summary(outcomes: list[Outcome], verb: str) -> tuple[str, int]:
    """('2 of 10 failed' or 'started 10 of 10'), and the exit code (1 if any failed)."""
    failed = sum(not o.ok for o in outcomes)
    if failed:
        return f"{failed} of {len(outcomes)} failed", 1
    return f"{verb} {len(outcomes)} of {len(outcomes)}", 0


def report(ctx: Any, cloud: str, outcomes: list[Outcome], done: str, args: Any, *, key: str = "name",
           state: bool = False) -> int:
    """The per-target result table on stdout, the summary on stderr; returns the exit code."""
    rows = []
    for o in outcomes:
        row = {key: o.name, "cloud": cloud}
        if state:
            row["state"] = str(getattr(o.value, "state", "")) if o.ok and o.value else ""
        rows.append({**row, "result": done if o.ok else f"failed: {o.message}"})
    ctx.emit([key, "cloud", *(["state"] if state else []), "result"], rows, args)
    text, code = summary(outcomes, done)
    ctx.warn(text)
    return code
