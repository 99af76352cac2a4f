"""Which groups pop from which topics now: the last pop of each (group,
topic) that reached this master, for the operator's reset (a reset of a
group still popping is refused unless forced: core/admin/reset.py).

Pop consumers have no membership (no heartbeats, no client id the broker
keeps), so "live" is "popped here within the last `live_ms`". Bounded: at
most `max_keys` (group, topic)s; one past it forgets the least recently
popped, and from then until `live_ms` has passed every (group, topic) counts
as live (it may be one that was forgotten): a reset is refused rather than
let through on a forgotten pop. Plain object, clock passed in, thread safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_KEYS = 100_000


class RecentPops:
    def __init__(self, live_ms: int, max_keys: int = MAX_KEYS) -> None:
        self.live_ms = live_ms
        self.max_keys = max_keys
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()  # least recently popped first
        self._forgot_ms: int | None = None  # when a key was last forgotten for room
        self._lock = threading.Lock()

    def note(self, group: str, topic: str, now_ms: int) -> None:
        key = (group, topic)
        with self._lock:
            self._last.pop(key, None)
            self._last[key] = now_ms
            self._expire(now_ms)
            if len(self._last) > self.max_keys:
                self._last.popitem(last=False)
                self._forgot_ms = now_ms

    def _expire(self, now_ms: int) -> None:
        while self._last:
            key, at = next(iter(self._last.items()))
            if now_ms - at < self.live_ms:
                break
            del self._last[key]

    def last(self, group: str, topic: str, now_ms: int) -> int | None:
        """When `group` last popped from `topic` here, if within `live_ms`;
        `now_ms` when that cannot be told (a key forgotten for room lately)."""
        with self._lock:
            at = self._last.get((group, topic))
            if at is not None and now_ms - at < self.live_ms:
                return at
            if self._forgot_ms is not None and now_ms - self._forgot_ms < self.live_ms:
                return now_ms
            return None

    def __len__(self) -> int:
        return len(self._last)
