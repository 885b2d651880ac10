"""Waiting for a cloud: call until a condition holds, backing off between calls, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class PollTimeout(Exception):
    """The condition did not hold in time; ``last`` is what the last call returned."""

    def __init__(self, last: Any) -> None:
        super().__init__("timed out")
        self.last = last


def poll(fn: Callable[[], T], until: Callable[[T], bool], timeout: float, *, interval: float = 0.25,
         max_interval: float = 3.0) -> T:
    """Call ``fn()`` until ``until(value)`` is true and return that value.

    ``until`` may raise to stop early (a VM went to ERROR).  The pause grows 1.5x
    per round up to ``max_interval`` and never overruns the deadline; with
    ``timeout`` 0 ``fn`` is called once.  Raises :class:`PollTimeout` at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if until(value):
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise PollTimeout(value)
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, max_interval)
