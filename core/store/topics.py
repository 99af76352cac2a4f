"""Topic definitions known to a store: name -> queue count.

Persisted as `topics.json` (written atomically). The store needs them to
refuse a queue id out of range before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import InvalidArgumentError
from core.fileutil import atomic_write
from core.record import validate_topic

TOPICS = "topics.json"


class TopicTable:
    def __init__(self, directory: Path, max_queues: int) -> None:
        self.path = directory / TOPICS
        self.max_queues = max_queues
        self._queues: dict[str, int] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            for name, spec in data.get("topics", {}).items():
                self._queues[name] = int(spec["queues"])

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
        """
        if not self.would_change(topic, queues):
            return False
        updated = dict(self._queues)
        updated[topic] = queues
        body = {"topics": {n: {"queues": q} for n, q in sorted(updated.items())}}
        atomic_write(self.path, json.dumps(body, indent=1).encode())
        self._queues = updated
        return True
