"""The master's write lease, as the broker sees it (fencing).

The controller renews a master's lease when its heartbeat arrives, until
`arrival + lease_ms` on the controller's clock, and elects no one before
then. The broker counts from when it *sent* that heartbeat (never later than
the arrival) and stops acknowledging writes after `FENCE_FRACTION` of the
lease, so it is fenced while the controller still considers it master: a
quarter of the lease absorbs clock-rate differences and scheduling delays.

Timeline, lease L, broker heartbeat H (< L/4 so one late heartbeat is harmless):

    broker sends heartbeat at t0 -> controller receives it at t1 >= t0
    broker writes until              t0 + 0.75 L
    controller may elect after       t1 + L       (>= t0 + L)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

FENCE_FRACTION = 0.75


class Lease:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def grant(self, sent_at: float, lease_ms: int) -> None:
        """The controller renewed the lease for a heartbeat sent at `sent_at`."""
        with self._lock:
            self._until = max(self._until, sent_at + FENCE_FRACTION * lease_ms / 1000)

    def revoke(self) -> None:
        with self._lock:
            self._until = 0.0

    @property
    def granted(self) -> bool:
        """Whether a lease was ever granted (and not revoked)."""
        return self._until > 0

    def valid(self) -> bool:
        return self._clock() < self._until

    def left_ms(self) -> int:
        return max(0, int((self._until - self._clock()) * 1000))
