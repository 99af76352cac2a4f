"""Consumer offsets per (group, topic, queue), persisted in the data directory.

A commit travels through the log as an `offset` system record (so slaves and
recovery apply it in log order: a later commit always wins); this table is
the applied state.

`offsets.json` is rewritten atomically (temp file, fsync, rename) on every
commit that changes something, so an acknowledged commit survives kill -9.
Commits are rare next to sends (consumers commit every few seconds), so one
small fsync each is affordable; issue 5 moves offsets into the log. If it
cannot be written, the commit fails (StorageFullError) and the table in
memory is unchanged; the store then takes the commit's record back out of
the log (core/store/publish.py), so the client is told and nothing claims it.

A topic deletion forgets its keys with `offset` records of offset FORGET
(-1), each with its `prev`, so replays, rebuilds and cut tails treat them in
log order like any commit.

A damaged or missing `offsets.json` is rebuilt from the log's `offset`
records (the last one per queue wins), under the rule in core/sidefiles.py.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import InvalidArgumentError, InvalidOffsetError, TailraceError, brief
from core.sidefiles import (
    LogHistory,
    Payloads,
    count,
    load_or_rebuild,
    need,
    write_json,
)

OFFSETS = "offsets.json"
_GROUP = re.compile(r"[A-Za-z0-9_.\-%]{1,255}")
U64 = (1 << 64) - 1
ADVICE = (
    "restore it from a backup or from another broker of this group (the same file), or move it "
    "aside and start again: it is then rebuilt from the commits the log still holds (a group whose "
    "last commit is gone from the log starts where its consumers' start position says)"
)
Key = tuple[str, str, int]
FORGET = -1  # an `offset` record's offset that forgets the key (a topic deletion)


def validate_group(group: str) -> str:
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise InvalidArgumentError(f"group name {brief(group)} must match [A-Za-z0-9_.%-]{{1,255}}")
    return group


def _parse(raw: Any) -> dict[Key, int]:
    need(isinstance(raw, dict) and isinstance(raw.get("offsets"), dict), "no offsets table")
    out = {}
    for group, topics in raw["offsets"].items():
        try:
            validate_group(group)
        except TailraceError as exc:
            raise ValueError(exc.message) from exc
        for topic, queues in topics.items():
            for qid, off in queues.items():
                need(isinstance(topic, str) and qid.isdigit(), f"queue {topic!r}/{qid!r}")
                out[(group, topic, int(qid))] = count(off, f"offset of {group}/{topic}/{qid}")
    return out


def _key(p: dict[str, Any]) -> Key:
    return (str(p["group"]), str(p["topic"]), int(p["queue"]))


def _replay(payloads: Payloads) -> dict[Key, int]:
    """The table the log's `offset` records make, in log order (last wins);
    a malformed one is skipped, as it was when it was applied."""
    table: dict[Key, int] = {}
    for p in payloads:
        try:
            key, off = _key(p), int(p["offset"])
            if off == FORGET:
                table.pop(key, None)
                continue
            ConsumerOffsets.check(key[0], off)
        except (KeyError, TypeError, ValueError, TailraceError):
            continue
        table[key] = off
    return table


class ConsumerOffsets:
    def __init__(self, directory: Path, history: LogHistory | None = None) -> None:
        """Load `offsets.json`; with `history` (the store's log), rebuild it
        when damaged or missing (core/sidefiles.py). Without it a damaged
        file raises DamagedFileError."""
        self.path = directory / OFFSETS
        self._lock = threading.Lock()
        self._offsets: dict[Key, int] = {}
        found = load_or_rebuild(self.path, _parse, history, ADVICE, "offset", _replay)
        table = found or {}
        if not self.path.exists():  # rebuilt, or a new store: then a missing file means a lost one
            self._persist(table)
        self._offsets = table

    @staticmethod
    def check(group: str, offset: int) -> None:
        validate_group(group)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= U64:
            raise InvalidOffsetError(f"offset must be in 0..2^64-1, got {offset!r}")

    def apply(self, payload: dict[str, Any]) -> None:
        """Apply an `offset` system record (from this log, replication or
        recovery); offset FORGET removes the key (its topic was deleted)."""
        key, offset = _key(payload), int(payload["offset"])
        if offset != FORGET:
            self.commit(*key, offset)
            return
        validate_group(key[0])
        with self._lock:
            if key in self._offsets:
                updated = dict(self._offsets)
                del updated[key]
                self._persist(updated)
                self._offsets = updated

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        self.check(group, offset)
        key = (group, topic, queue_id)
        with self._lock:
            if self._offsets.get(key) == offset:
                return
            updated = dict(self._offsets)
            updated[key] = offset
            self._persist(updated)  # StorageFullError: nothing changed, memory matches the file
            self._offsets = updated

    def roll_back(self, tail: list[dict[str, Any]], scan_before: Callable[[], list[dict[str, Any]]]) -> int:
        """The log is cut: undo the commits in the removed part (`tail`, its
        `offset` records in log order). Each record carries the value it
        replaced (`prev`, -1: none), so a key goes back to the `prev` of its
        first record in the tail; for records written before `prev` existed,
        the last value in the rest of the log (`scan_before()`) is used, or the
        key is forgotten. Returns how many keys changed."""
        firsts: dict[Key, dict[str, Any]] = {}
        for p in tail:
            try:  # a malformed record was skipped when it was applied: nothing to undo
                firsts.setdefault(_key(p), p)
            except (KeyError, TypeError, ValueError):
                continue
        restore: dict[Key, int | None] = {}
        unknown = set()
        for key, p in firsts.items():
            try:
                restore[key] = int(p["prev"]) if int(p["prev"]) >= 0 else None
            except (KeyError, TypeError, ValueError):
                unknown.add(key)
        if unknown:
            last = _replay(scan_before())
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

    def keys(self) -> list[Key]:
        """Every (group, topic, queue) with a committed offset."""
        return list(self._offsets)

    def query(self, group: str, topic: str, queue_id: int) -> int | None:
        validate_group(group)
        return self._offsets.get((group, topic, queue_id))

    def _persist(self, offsets: dict[Key, int]) -> None:
        tree: dict[str, dict[str, dict[str, int]]] = {}
        for (g, t, q), off in sorted(offsets.items()):
            tree.setdefault(g, {}).setdefault(t, {})[str(q)] = off
        write_json(self.path, {"offsets": tree})
