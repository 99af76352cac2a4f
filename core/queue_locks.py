"""Queue locks for orderly consumption (the master's, in memory).

A member of a consumer group in orderly mode processes a queue only while it
holds the queue's lock here. Locks are leases (`lease_ms`), renewed by the
holder; a member giving a queue up in a rebalance unlocks it after it has
committed, so the next owner starts from that commit and never overlaps.
A lock whose holder vanished frees itself when its lease ends. Locks are not
replicated: after a failover the new master starts with none, and holders
take them again at their next renewal (a lease-long window, as in RocketMQ).
"""

from __future__ import annotations

import threading

from core.errors import QuotaExceededError


class QueueLocks:
    def __init__(self, max_locks: int = 100_000) -> None:
        """At most `max_locks` held at once (QUOTA_EXCEEDED beyond); expired
        leases are forgotten (swept at most once a second)."""
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, int], tuple[str, int]] = {}  # -> (client, expires ms)
        self.max_locks = max_locks
        self._swept = 0

    def _sweep(self, now_ms: int) -> None:
        self._swept = now_ms
        for key, (_, expires) in list(self._held.items()):
            if expires <= now_ms:
                del self._held[key]

    def __len__(self) -> int:
        return len(self._held)

    def lock(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int, now_ms: int
    ) -> list[int]:
        """Take or renew each queue's lock; returns the queue ids now held by `client_id`."""
        got = []
        with self._lock:
            if now_ms - self._swept >= 1000 or len(self._held) + len(queue_ids) > self.max_locks:
                self._sweep(now_ms)
            new = sum(1 for q in queue_ids if (group, topic, q) not in self._held)
            if len(self._held) + new > self.max_locks:
                raise QuotaExceededError(f"{self.max_locks} queue locks are held (quotas.max_queue_locks)")
            for q in queue_ids:
                key = (group, topic, q)
                holder = self._held.get(key)
                if holder is None or holder[0] == client_id or holder[1] <= now_ms:
                    self._held[key] = (client_id, now_ms + lease_ms)
                    got.append(q)
        return got

    def unlock(self, group: str, topic: str, client_id: str, queue_ids: list[int]) -> None:
        with self._lock:
            for q in queue_ids:
                key = (group, topic, q)
                holder = self._held.get(key)
                if holder is not None and holder[0] == client_id:
                    del self._held[key]

    def forget_topic(self, topic: str) -> int:
        """Drop every lock on `topic` (it was deleted); returns how many."""
        with self._lock:
            keys = [k for k in self._held if k[1] == topic]
            for key in keys:
                del self._held[key]
        return len(keys)

    def holder(self, group: str, topic: str, queue_id: int, now_ms: int) -> str | None:
        with self._lock:
            h = self._held.get((group, topic, queue_id))
            return h[0] if h is not None and h[1] > now_ms else None
