"""Consumer-group membership as a broker sees it: plain logic, clock passed in.

Membership is per (group, topic): two consumers of one group on different
topics must not count as sharing either topic. A member heartbeats with its
own interval; it is dropped after missing three.
"""

from __future__ import annotations

import re
import threading

from core.errors import InvalidArgumentError, QuotaExceededError, brief
from core.offsets import validate_group
from core.record import validate_topic

MISSED_HEARTBEATS = 3
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


class ConsumerGroups:
    def __init__(self, max_groups: int = 10_000, max_members: int = 1_000) -> None:
        """At most `max_groups` (group, topic) keys with live members and
        `max_members` members in each: beyond, a heartbeat of a new one is
        refused (QUOTA_EXCEEDED). Members that stopped heartbeating are
        forgotten (swept at most once a second), so the table never keeps a
        name a client used once."""
        self._lock = threading.Lock()
        # (group, topic) -> client id -> (last heartbeat ms, heartbeat interval ms)
        self._members: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        self.max_groups = max_groups
        self.max_members = max_members
        self._swept = 0

    def heartbeat(self, group: str, topic: str, client_id: str, heartbeat_ms: int, now_ms: int) -> list[str]:
        validate_group(group)
        validate_topic(topic)
        if not _CLIENT_ID.fullmatch(client_id or ""):
            raise InvalidArgumentError(f"client id {brief(client_id)} must match [A-Za-z0-9_.:@-]{{1,128}}")
        if not 1 <= heartbeat_ms <= 3_600_000:
            raise InvalidArgumentError("heartbeat_ms must be in 1..3600000")
        key = (group, topic)
        with self._lock:
            if now_ms - self._swept >= 1000:
                self._sweep(now_ms)
            members = self._members.get(key)
            if members is None:
                if len(self._members) >= self.max_groups:
                    self._sweep(now_ms)
                if len(self._members) >= self.max_groups:
                    raise QuotaExceededError(
                        f"{self.max_groups} consumer groups are live (quotas.max_groups)"
                    )
                members = self._members[key] = {}
            if client_id not in members and len(self._live(key, now_ms)) >= self.max_members:
                raise QuotaExceededError(
                    f"group {group!r} has {self.max_members} live members on {topic!r} "
                    "(quotas.max_members_per_group)"
                )
            self._members.setdefault(key, members)[client_id] = (now_ms, heartbeat_ms)
            return self._live(key, now_ms)

    def _sweep(self, now_ms: int) -> None:
        self._swept = now_ms
        for key in list(self._members):
            self._live(key, now_ms)

    def __len__(self) -> int:
        """(group, topic) keys with members (as of the last sweep)."""
        return len(self._members)

    def live(self, now_ms: int) -> list[tuple[str, str]]:
        """The (group, topic)s with a live member now."""
        with self._lock:
            return [key for key in list(self._members) if self._live(key, now_ms)]

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
