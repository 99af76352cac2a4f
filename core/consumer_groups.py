"""Consumer-group membership as a broker sees it: plain logic, clock passed in.

Membership is per (group, topic): two consumers of one group on different
topics must not count as sharing either topic. A member heartbeats with its
own interval; it is dropped after missing three.
"""

from __future__ import annotations

import re
import threading

from core.errors import InvalidArgumentError
from core.offsets import validate_group
from core.record import validate_topic

MISSED_HEARTBEATS = 3
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


class ConsumerGroups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (group, topic) -> client id -> (last heartbeat ms, heartbeat interval ms)
        self._members: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}

    def heartbeat(self, group: str, topic: str, client_id: str, heartbeat_ms: int, now_ms: int) -> list[str]:
        validate_group(group)
        validate_topic(topic)
        if not _CLIENT_ID.fullmatch(client_id or ""):
            raise InvalidArgumentError(f"client id {client_id!r} must match [A-Za-z0-9_.:@-]{{1,128}}")
        if not 1 <= heartbeat_ms <= 3_600_000:
            raise InvalidArgumentError("heartbeat_ms must be in 1..3600000")
        key = (group, topic)
        with self._lock:
            self._members.setdefault(key, {})[client_id] = (now_ms, heartbeat_ms)
            return self._live(key, now_ms)

    def unregister(self, group: str, topic: str, client_id: str, now_ms: int) -> list[str]:
        validate_group(group)
        key = (group, topic)
        with self._lock:
            self._members.get(key, {}).pop(client_id, None)
            return self._live(key, now_ms)

    def members(self, group: str, topic: str, now_ms: int) -> list[str]:
        with self._lock:
            return self._live((group, topic), now_ms)

    def _live(self, key: tuple[str, str], now_ms: int) -> list[str]:
        members = self._members.get(key, {})
        for cid, (seen, interval) in list(members.items()):
            if now_ms - seen > MISSED_HEARTBEATS * interval:
                del members[cid]
        if not members:
            self._members.pop(key, None)
        return sorted(members)
