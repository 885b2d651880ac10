"""Bulk operations: run one verb on many targets in parallel, carry on past
single failures, and end with a per-target result and a summary.

Ctrl-C: targets not started are dropped, calls that already changed the cloud
are waited for and recorded; a second Ctrl-C abandons those, and each is marked
so the command can find what the cloud did.  Calls run in daemon threads that
check their run's cancellation before changing a cloud (:func:`proceed`), so
none acts after the command has returned, and none keeps the process alive.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cm.errors import CmError
from cm.pacing import Pacer

if TYPE_CHECKING:
    from argparse import Namespace

    from cm.context import Context

EXIT_INTERRUPTED = 130
NOT_STARTED = "not started: interrupted"
ABANDONED = "abandoned: interrupted while in flight"


class Interrupted(CmError):
    """The user pressed Ctrl-C before this call changed anything."""


@dataclass
class Outcome:
    name: str
    ok: bool
    message: str = ""
    value: Any = None
    error: BaseException | None = None
    # Abandoned while in flight, after it may have changed the cloud: the command must look.
    maybe_done: bool = False

    @property
    def interrupted(self) -> bool:
        return self.message in (NOT_STARTED, ABANDONED)


class Outcomes(list[Outcome]):
    """The outcomes in the order the targets were given; ``interrupted`` after a Ctrl-C."""

    interrupted = False


class _Run:
    """What the threads of one bulk command share: its cancellation and who acted."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        self.acting: set[str] = set()

    def cancel(self) -> set[str]:
        """Stop every call that has not yet changed the cloud; return those that have."""
        with self.lock:
            self.cancelled.set()
            return set(self.acting)


_current = threading.local()  # .run and .name of the call a worker thread is making


def proceed() -> None:
    """Called by a provider just before a request that changes the cloud (create, delete, stop ...).

    Raises :class:`Interrupted` once the user pressed Ctrl-C, so a call not yet
    sent is never sent; otherwise notes that this target may have changed.
    """
    run: _Run | None = getattr(_current, "run", None)
    if run is None:
        return
    with run.lock:
        if run.cancelled.is_set():
            raise Interrupted(NOT_STARTED)
        run.acting.add(_current.name)


def pause(seconds: float) -> None:
    """Sleep between polls; raises :class:`Interrupted` at once when the user pressed Ctrl-C."""
    run: _Run | None = getattr(_current, "run", None)
    if run is None:
        time.sleep(max(0.0, seconds))
    elif run.cancelled.wait(max(0.0, seconds)):
        raise Interrupted("stopped waiting: interrupted")


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (stderr); silent when piped or for one target."""
    if total < 2 or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

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


def _call(run: _Run, name: str, action: Callable[[str], Any], done: queue.SimpleQueue[Any]) -> None:
    _current.run, _current.name = run, name
    try:
        done.put((name, True, action(name)))
    except BaseException as exc:  # noqa: BLE001 - handed to the command as this target's outcome
        done.put((name, False, exc))


def _failed(name: str, exc: BaseException) -> Outcome:
    if isinstance(exc, CmError):
        return Outcome(name, False, str(exc), error=exc)
    return Outcome(name, False, f"{type(exc).__name__}: {exc}", error=exc)  # one target's bug must not stop the rest


def run_each(names: list[str], action: Callable[[str], Any], label: str,
             on_done: Callable[[Outcome], None] | None = None, *,
             batch: Callable[[], AbstractContextManager[Any]] | None = None) -> Outcomes:
    """Call ``action(name)`` for every name in parallel; never raise for one target.

    ``on_done`` runs in the calling thread as targets finish, several at once inside
    one ``batch()`` (one mirror write), so results are kept even if the user
    interrupts the rest.  A throttled call is tried again later (cm.pacing).
    """
    names = list(dict.fromkeys(names))  # one action per target, even if named twice
    run, pacer = _Run(), Pacer(len(names))
    results: queue.SimpleQueue[tuple[str, bool, Any]] = queue.SimpleQueue()
    waiting_names: deque[str] = deque(names)
    retries: list[tuple[float, str]] = []  # (not before, name)
    attempts: dict[str, int] = {}
    alone: dict[str, bool] = {}
    last_error: dict[str, BaseException] = {}
    in_flight: set[str] = set()
    outcomes: dict[str, Outcome] = {}

    def finish(found: list[Outcome]) -> None:
        with batch() if batch else nullcontext():
            for outcome in found:
                if on_done and outcome.ok:
                    try:
                        on_done(outcome)
                    except CmError as exc:  # e.g. the mirror could not record it: that target failed
                        outcome = Outcome(outcome.name, False, str(exc), outcome.value, exc)
                outcomes[outcome.name] = outcome

    def start(name: str) -> None:
        attempts[name] = attempts.get(name, 0) + 1
        alone[name] = not in_flight  # and stays so only while no other call starts (cm.pacing)
        for other in in_flight:
            alone[other] = False
        in_flight.add(name)
        threading.Thread(target=_call, args=(run, name, action, results), name=f"cm-{label}", daemon=True).start()

    def answered(name: str, ok: bool, value: Any) -> Outcome | None:
        in_flight.discard(name)
        if ok:
            pacer.succeeded()
            return Outcome(name, True, value=value)
        after = None if run.cancelled.is_set() else pacer.retry_after(value, attempts[name], alone[name])
        if after is None:
            return _failed(name, value)
        pacer.throttled(len(in_flight))
        last_error[name] = value
        retries.append((time.monotonic() + after, name))
        return None

    def next_ready() -> str | None:
        retries.sort()
        if retries and retries[0][0] <= time.monotonic():
            return retries.pop(0)[1]
        return waiting_names.popleft() if waiting_names else None

    def collect(timeout: float) -> list[Outcome]:
        found = []
        try:
            item = results.get(timeout=timeout)
            while True:
                outcome = answered(*item)
                if outcome:
                    found.append(outcome)
                item = results.get_nowait()
        except queue.Empty:
            return found

    try:
        with progress(label, len(names)) as advance:
            while waiting_names or retries or in_flight:
                while len(in_flight) < pacer.limit:
                    name = next_ready()
                    if name is None:
                        break
                    if pacer.quota_full and name in last_error:  # the quota is used up: no need to ask again
                        finish([_failed(name, last_error[name])])
                        continue
                    start(name)
                soonest = min((t for t, _ in retries), default=time.monotonic() + 0.5)
                found = collect(max(0.01, min(0.5, soonest - time.monotonic())))
                finish(found)
                for _ in found:
                    advance()
    except KeyboardInterrupt:
        _interrupted(run, in_flight, collect, finish, outcomes)
        for name in names:
            outcomes.setdefault(name, Outcome(name, False, NOT_STARTED))
    result = Outcomes(outcomes[n] for n in names)
    result.interrupted = run.cancelled.is_set()
    return result


def _interrupted(run: _Run, in_flight: set[str], collect: Callable[[float], list[Outcome]],
                 finish: Callable[[list[Outcome]], None], outcomes: dict[str, Outcome]) -> None:
    """First Ctrl-C: wait for the calls that changed the cloud; a second one abandons them."""
    run.cancel()
    if in_flight:
        print(f"cm: interrupted; waiting for {len(in_flight)} call(s) in flight to finish "
              "(Ctrl-C again to abandon them)", file=sys.stderr)
    try:
        while in_flight:
            finish(collect(0.2))
    except KeyboardInterrupt:
        acting = run.cancel()
        for name in list(in_flight):
            outcomes[name] = Outcome(name, False, ABANDONED, maybe_done=name in acting)


def summary(outcomes: list[Outcome], verb: str) -> tuple[str, int]:
    """('2 of 10 failed' or 'started 10 of 10'), and the exit code (1 if any failed, 130 if interrupted)."""
    total = len(outcomes)
    if getattr(outcomes, "interrupted", False):
        done = sum(o.ok for o in outcomes)
        skipped = sum(o.message == NOT_STARTED for o in outcomes)
        abandoned = sum(o.message == ABANDONED for o in outcomes)
        failed = total - done - skipped - abandoned
        parts = [f"{verb} {done} of {total}", *([f"{failed} failed"] if failed else []),
                 *([f"{skipped} not started"] if skipped else []),
                 *([f"{abandoned} abandoned in flight"] if abandoned else [])]
        return "interrupted: " + ", ".join(parts), EXIT_INTERRUPTED
    failed = sum(not o.ok for o in outcomes)
    if failed:
        return f"{failed} of {total} failed", 1
    return f"{verb} {total} of {total}", 0


def report(ctx: Context, cloud: str, outcomes: list[Outcome], done: str, args: Namespace, *, key: str = "name",
           state: bool = False, result_of: Callable[[Outcome], str] | None = None) -> int:
    """The per-target result table on stdout, the summary on stderr; returns the exit code."""
    rows = []
    for o in outcomes:
        row = {key: o.name, "cloud": cloud}
        if state:
            row["state"] = str(getattr(o.value, "state", "")) if o.ok and o.value else ""
        text = (result_of(o) if result_of else done) if o.ok else \
            (o.message if o.interrupted else f"failed: {o.message}")
        rows.append({**row, "result": text})
    ctx.emit([key, "cloud", *(["state"] if state else []), "result"], rows, args)
    text, code = summary(outcomes, done)
    ctx.warn(text)
    return code
