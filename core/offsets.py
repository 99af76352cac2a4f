"""Consumer offsets per (group, topic, queue), persisted in the data directory.

A commit travels through the log as an `offset` system record (so slaves and
recovery apply it in log order: a later commit always wins); this table is
the applied state.

`offsets.json` is rewritten atomically (temp file, fsync, rename) on every
commit that changes something, so an acknowledged commit survives kill -9.
Commits are rare next to sends (consumers commit every few seconds), so one
small fsync each is affordable; issue 5 moves offsets into the log.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import InvalidArgumentError, InvalidOffsetError, StorageFullError, brief
from core.fileutil import atomic_write

OFFSETS = "offsets.json"
_GROUP = re.compile(r"[A-Za-z0-9_.\-%]{1,255}")
U64 = (1 << 64) - 1


def validate_group(group: str) -> str:
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise InvalidArgumentError(f"group name {brief(group)} must match [A-Za-z0-9_.%-]{{1,255}}")
    return group


class ConsumerOffsets:
    def __init__(self, directory: Path) -> None:
        self.path = directory / OFFSETS
        self._lock = threading.Lock()
        self._offsets: dict[tuple[str, str, int], int] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            for group, topics in data.get("offsets", {}).items():
                for topic, queues in topics.items():
                    for qid, off in queues.items():
                        self._offsets[(group, topic, int(qid))] = int(off)

    @staticmethod
    def check(group: str, offset: int) -> None:
        validate_group(group)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= U64:
            raise InvalidOffsetError(f"offset must be in 0..2^64-1, got {offset!r}")

    def apply(self, payload: dict[str, Any]) -> None:
        """Apply an `offset` system record (from this log, replication or recovery)."""
        self.commit(
            str(payload["group"]), str(payload["topic"]), int(payload["queue"]), int(payload["offset"])
        )

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        self.check(group, offset)
        key = (group, topic, queue_id)
        with self._lock:
            if self._offsets.get(key) == offset:
                return
            updated = dict(self._offsets)
            updated[key] = offset
            try:
                self._persist(updated)
            except OSError as exc:  # nothing changed: memory still matches the file
                raise StorageFullError(f"cannot store the offset: {exc.strerror}") from exc
            self._offsets = updated

    def roll_back(self, tail: list[dict[str, Any]], scan_before: Callable[[], list[dict[str, Any]]]) -> int:
        """The log is cut: undo the commits in the removed part (`tail`, its
        `offset` records in log order). Each record carries the value it
        replaced (`prev`, -1: none), so a key goes back to the `prev` of its
        first record in the tail; for records written before `prev` existed,
        the last value in the rest of the log (`scan_before()`) is used, or the
        key is forgotten. Returns how many keys changed."""
        firsts: dict[tuple[str, str, int], dict[str, Any]] = {}
        for p in tail:
            firsts.setdefault((str(p["group"]), str(p["topic"]), int(p["queue"])), p)
        restore: dict[tuple[str, str, int], int | None] = {}
        unknown = set()
        for key, p in firsts.items():
            if "prev" in p:
                restore[key] = int(p["prev"]) if int(p["prev"]) >= 0 else None
            else:
                unknown.add(key)
        if unknown:
            last: dict[tuple[str, str, int], int] = {}
            for p in scan_before():
                key = (str(p["group"]), str(p["topic"]), int(p["queue"]))
                if key in unknown:
                    last[key] = int(p["offset"])
            restore.update({key: last.get(key) for key in unknown})
        if not restore:
            return 0
        with self._lock:
            table = dict(self._offsets)
            for key, value in restore.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
            self._persist(table)
            self._offsets = table
        return len(restore)

    def query(self, group: str, topic: str, queue_id: int) -> int | None:
        validate_group(group)
        return self._offsets.get((group, topic, queue_id))

    def _persist(self, offsets: dict[tuple[str, str, int], int]) -> None:
        tree: dict[str, dict[str, dict[str, int]]] = {}
        for (g, t, q), off in sorted(offsets.items()):
            tree.setdefault(g, {}).setdefault(t, {})[str(q)] = off
        atomic_write(self.path, json.dumps({"offsets": tree}).encode())
