"""Topic definitions known to a store: name -> queue count.

Persisted as `topics.json` (written atomically). The store needs them to
refuse a queue id out of range before anything is written.

Topics travel through the log as `topic` system records, so a damaged or
missing `topics.json` is rebuilt from the log after recovery
(`restore`, under the rule in core/sidefiles.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.errors import InvalidArgumentError, TailraceError
from core.record import validate_topic
from core.sidefiles import Damage, LogHistory, count, need, needs_rebuild, read_json, write_json

TOPICS = "topics.json"
MAX_QUEUES = 65536  # the most store.max_queues_per_topic may be
ADVICE = (
    "restore it from a backup or from another broker of this group (the same file), or move it "
    "aside and start again: it is then rebuilt from the topic records the log still holds and the "
    "queues that hold messages (a topic whose record and messages are all gone is forgotten)"
)


class TopicTable:
    def __init__(self, directory: Path, max_queues: int) -> None:
        self.path = directory / TOPICS
        self.max_queues = max_queues
        self._queues: dict[str, int] = {}
        self.damage: Damage | None = None  # why topics.json could not be read (see `restore`)
        self.missing = False
        try:
            found = read_json(self.path, self._parse)
        except Damage as exc:
            self.damage = exc
        else:
            self.missing = found is None
            self._queues = found or {}

    @staticmethod
    def _parse(raw: Any) -> dict[str, int]:
        need(isinstance(raw, dict) and isinstance(raw.get("topics"), dict), "no topics table")
        out = {}
        for name, spec in raw["topics"].items():
            try:
                validate_topic(name)
            except TailraceError as exc:
                raise ValueError(f"topic name {name!r}: {exc.message}") from exc
            need(isinstance(spec, dict), f"topic {name!r} is not a table")
            # not self.max_queues: lowering that setting must not make the file "damaged"
            out[name] = count(spec["queues"], f"queue count of {name!r}", 1, MAX_QUEUES)
        return out

    def restore(self, history: LogHistory, stored_queues: Iterable[tuple[str, int]]) -> None:
        """After recovery: rebuild a damaged or missing table from the log's
        `topic` records, each topic covering the queues that hold messages
        (`stored_queues`), or raise DamagedFileError."""
        if not needs_rebuild(self.path, self.damage, self.missing, history, ADVICE):
            return
        rebuilt: dict[str, int] = {}
        for p in history.payloads("topic"):  # in log order: a deletion forgets what came before
            if p.get("delete") is True:
                rebuilt.pop(str(p.get("name")), None)
                continue
            try:
                name, queues = str(p["name"]), int(p["queues"])
            except (KeyError, TypeError, ValueError):
                continue  # skipped where it was applied too (core/store/system.py)
            rebuilt[name] = max(queues, rebuilt.get(name, 0))
        for topic, qid in stored_queues:
            rebuilt[topic] = max(qid + 1, rebuilt.get(topic, 0))
        self._write(rebuilt)
        self._queues = rebuilt
        self.damage, self.missing = None, False

    def queue_count(self, topic: str) -> int | None:
        return self._queues.get(topic)

    def names(self) -> list[str]:
        return sorted(self._queues)

    def would_change(self, topic: str, queues: int) -> bool:
        """Validate a definition; True if `create` would change something."""
        validate_topic(topic)
        if isinstance(queues, bool) or not isinstance(queues, int):
            raise InvalidArgumentError(f"queue count must be an integer, got {queues!r}")
        if not 1 <= queues <= self.max_queues:
            raise InvalidArgumentError(f"queue count {queues} for {topic!r} must be in 1..{self.max_queues}")
        current = self._queues.get(topic)
        return current is None or current < queues

    def create(self, topic: str, queues: int) -> bool:
        """Define a topic (or grow its queue count); False if nothing changed.

        Queue counts never shrink: queues that hold data must stay addressable.
        StorageFullError (nothing changed) if topics.json cannot be written.
        """
        if not self.would_change(topic, queues):
            return False
        updated = dict(self._queues)
        updated[topic] = queues
        self._write(updated)
        self._queues = updated
        return True

    def remove(self, topic: str) -> bool:
        """Forget a topic (a deletion, core/store/deletion.py); False if it
        was not defined. StorageFullError (nothing changed) if topics.json
        cannot be written."""
        if topic not in self._queues:
            return False
        updated = dict(self._queues)
        del updated[topic]
        self._write(updated)
        self._queues = updated
        return True

    def _write(self, queues: dict[str, int]) -> None:
        write_json(self.path, {"topics": {n: {"queues": q} for n, q in sorted(queues.items())}}, indent=1)
