"""How each (group, topic, queue)'s last pull was answered by this broker:
when, and the redirect advice it carried (core/redirect.py). Kept in memory
and bounded; the admin commands read it to say whether a queue is read from
the master or a slave, and why."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from core.redirect import Advice

Key = tuple[str, str, int]  # (group, topic, queue)
MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class LastRead:
    at_ms: int
    suggested_broker_id: int
    reason: str


class ReadLog:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        """At most `max_keys` queues remembered: the one pulled least recently is forgotten first."""
        self.max_keys = max_keys
        self._last: dict[Key, LastRead] = {}
        self._lock = threading.Lock()

    def note(self, key: Key, advice: Advice, now_ms: int) -> None:
        """`now_ms`: wall-clock ms (an operator reads it as a time)."""
        read = LastRead(now_ms, advice.suggested_broker_id, advice.reason.value)
        with self._lock:
            self._last.pop(key, None)  # re-inserted last: the dict's order is recency
            self._last[key] = read
            if len(self._last) > self.max_keys:
                del self._last[next(iter(self._last))]

    def get(self, key: Key) -> LastRead | None:
        return self._last.get(key)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._last)

    def forget_topic(self, topic: str) -> None:
        with self._lock:
            for key in [k for k in self._last if k[1] == topic]:
                del self._last[key]
