"""Bulk operations: run one verb on many targets in parallel, carry on past
single failures, and end with a per-target result and a summary.

Ctrl-C: targets not started are dropped, calls that already changed the cloud
are waited for and recorded; a second Ctrl-C abandons those, and each is marked
so the command can find what the cloud did.  Calls run in daemon threads that
check their run's cancellation before changing a cloud (:func:`proceed`), so
none acts after the command has returned, and none keeps the process alive.

Finished results are written to the mirror in batches, at most every 2 s (see
:class:`_Held`) and at once on Ctrl-C; a ``kill -9`` may lose the last 2 s of
records, which the cloud still has (`cm refresh` finds them).
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
MAX_HOLD = 2.0  # seconds a finished result may wait for its mirror write (a kill -9 loses at most these)


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


class _Workers:
    """Daemon threads that make the calls, reused across targets: a new one starts only when none is free.

    Starting a thread costs the starting thread a wait, so one per target made the
    main thread of a 10,000-VM boot mostly wait; at most as many threads as calls in flight.
    """

    def __init__(self, run: _Run, action: Callable[[str], Any], done: queue.SimpleQueue[Any], label: str) -> None:
        self.run, self.action, self.done, self.label = run, action, done, label
        self.tasks: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.free = 0  # threads waiting for a task, less the tasks queued for them
        self.started = 0

    def submit(self, name: str) -> None:
        with self.lock:
            spare = self.free > 0
            if spare:
                self.free -= 1
        self.tasks.put(name)
        if not spare:
            self.started += 1
            threading.Thread(target=self._serve, name=f"cm-{self.label}", daemon=True).start()

    def _serve(self) -> None:
        _current.run = self.run
        while (name := self.tasks.get()) is not None:
            _current.name = name
            try:
                outcome = (name, True, self.action(name))
            except BaseException as exc:  # noqa: BLE001 - handed to the command as this target's outcome
                outcome = (name, False, exc)
            with self.lock:  # free before the answer is seen, so the next target reuses this thread
                self.free += 1
            self.done.put(outcome)

    def stop(self) -> None:
        """Let every thread end once its call (if any) returns."""
        for _ in range(self.started):
            self.tasks.put(None)


class _Held:
    """Finished outcomes kept until a batch is worth its write: one mirror write costs time in
    proportion to the mirror, so writes come at most every twice the last one's duration (2 s at most)."""

    def __init__(self, write: Callable[[list[Outcome]], None]) -> None:
        self.write = write
        self.items: list[Outcome] = []
        self.due = 0.0  # monotonic time of the next write

    def add(self, found: list[Outcome]) -> None:
        self.items += found
        if self.items and time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        start = time.monotonic()
        self.write(self.items)
        self.items = []  # only once written: an interrupted write leaves them held
        end = time.monotonic()
        self.due = end + min(MAX_HOLD, 2 * (end - start))

    def wait(self, limit: float) -> float:
        """How long to wait for answers before a write falls due (``limit`` at most)."""
        return min(limit, self.due - time.monotonic()) if self.items else limit


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
    # A call is alone while nothing else was in flight when it started and nothing started since (cm.pacing):
    # the count of starts when it started (0: others were in flight), compared with the count now.
    started_as: dict[str, int] = {}
    starts = 0
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
        nonlocal starts
        attempts[name] = attempts.get(name, 0) + 1
        starts += 1
        started_as[name] = 0 if in_flight else starts
        in_flight.add(name)
        workers.submit(name)

    def answered(name: str, ok: bool, value: Any) -> Outcome | None:
        in_flight.discard(name)
        if ok:
            pacer.succeeded()
            return Outcome(name, True, value=value)
        after = None if run.cancelled.is_set() else pacer.retry_after(value, attempts[name],
                                                                          started_as[name] == starts)
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

    workers, held = _Workers(run, action, results, label), _Held(finish)
    try:
        with progress(label, len(names)) as advance:
            while waiting_names or retries or in_flight:
                while len(in_flight) < pacer.limit:
                    name = next_ready()
                    if name is None:
                        break
                    if pacer.quota_full and name in last_error:  # the quota is used up: no need to ask again
                        held.add([_failed(name, last_error[name])])
                        continue
                    start(name)
                soonest = min((t for t, _ in retries), default=time.monotonic() + 0.5)
                found = collect(max(0.01, held.wait(min(0.5, soonest - time.monotonic()))))
                held.add(found)
                for _ in found:
                    advance()
            held.flush()
    except KeyboardInterrupt:
        _interrupted(run, in_flight, collect, held, outcomes)
        for name in names:
            outcomes.setdefault(name, Outcome(name, False, NOT_STARTED))
    finally:
        workers.stop()
    result = Outcomes(outcomes[n] for n in names)
    result.interrupted = run.cancelled.is_set()
    return result


def _interrupted(run: _Run, in_flight: set[str], collect: Callable[[float], list[Outcome]],
                 held: _Held, outcomes: dict[str, Outcome]) -> None:
    """First Ctrl-C: write what finished, wait for the calls that changed the cloud; a second one abandons them."""
    run.cancel()
    if in_flight:
        print(f"cm: interrupted; waiting for {len(in_flight)} call(s) in flight to finish "
              "(Ctrl-C again to abandon them)", file=sys.stderr)
    try:
        held.flush()
        while in_flight:
            held.add(collect(0.2))
            held.flush()
    except KeyboardInterrupt:
        acting = run.cancel()
        for name in list(in_flight):
            outcomes[name] = Outcome(name, False, ABANDONED, maybe_done=name in acting)
        held.flush()  # a write the second Ctrl-C cut short: what finished is still recorded


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
