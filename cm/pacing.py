"""How many calls a bulk command keeps in flight, and when a throttled call is tried again.

Many calls at once make a 200-VM boot as fast as one VM; a cloud that answers
"slow down" (HTTP 429) or "over quota" while other calls are in flight gets
fewer at once (halved per throttled answer, one more per success) and the
throttled call is tried again after a growing pause, instead of failing.
"""

from __future__ import annotations

import random

from cm.errors import CmError, QuotaExceeded, Throttled

MAX_IN_FLIGHT = 256  # a whole 200-VM boot at once; each call waits on the cloud, not on this machine
MAX_ATTEMPTS = 8  # per target, for throttled answers
FIRST_PAUSE = 0.5  # seconds before the first retry of a throttled call; doubles per retry, up to MAX_PAUSE
MAX_PAUSE = 8.0


class Pacer:
    """The in-flight limit of one bulk run (additive increase, multiplicative decrease)."""

    def __init__(self, targets: int, ceiling: int = MAX_IN_FLIGHT) -> None:
        self.ceiling = max(1, min(ceiling, targets))
        self.limit = self.ceiling
        self.quota_full = False  # a call alone in flight was over quota: the quota is really used up

    def succeeded(self) -> None:
        self.limit = min(self.ceiling, self.limit + 1)

    def throttled(self, in_flight: int) -> None:
        self.limit = max(1, min(self.limit, in_flight + 1) // 2)

    def retry_after(self, error: BaseException, attempt: int, alone: bool) -> float | None:
        """Seconds to wait before trying a failed call again, or None if its failure is final.

        Over quota is final once a call alone in flight is refused: then no other call of
        this command holds what it asks for (an over-quota answer during a burst may not be).
        """
        if not isinstance(error, CmError) or attempt >= MAX_ATTEMPTS:
            return None
        if isinstance(error, QuotaExceeded):
            if alone and self.limit == 1:
                self.quota_full = True
            if self.quota_full:
                return None
        elif not isinstance(error, Throttled):
            return None
        pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (attempt - 1))
        return pause * random.uniform(0.75, 1.25)  # spread the retries of a burst

