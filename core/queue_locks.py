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


class QueueLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, int], tuple[str, int]] = {}  # -> (client, expires ms)

    def lock(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int, now_ms: int
    ) -> list[int]:
        """Take or renew each queue's lock; returns the queue ids now held by `client_id`."""
        got = []
        with self._lock:
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

    def holder(self, group: str, topic: str, queue_id: int, now_ms: int) -> str | None:
        with self._lock:
            h = self._held.get((group, topic, queue_id))
            return h[0] if h is not None and h[1] > now_ms else None
