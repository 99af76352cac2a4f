"""System records: topic definitions and consumer-offset commits as records
in the log (topic `__sys`, flag SYSTEM_FLAG, tags = kind, JSON body), so
slaves learn them by replication and recovery replays them.

`SystemRecords` holds the handlers that apply them, per kind. Every path that
adds a record to the log applies it in log order: the append paths under the
store's write lock (the publish step), recovery as it opens the store. A
handler registered after recovery gets the recovered records replayed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from core.errors import CorruptRecordError
from core.record import FIXED, SYSTEM_FLAG, SYSTEM_TOPIC, Record, encode_meta
from core.store.commitlog import Prepared

log = logging.getLogger("core.store.store")

Handler = Callable[[dict[str, Any]], None]


def encode_system(kind: str, payload: dict[str, Any], born_ms: int) -> Prepared:
    """A system record, encoded for CommitLog.append."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    meta = encode_meta(SYSTEM_TOPIC.encode(), kind.encode(), b"", b"")
    return (SYSTEM_TOPIC, meta, body, 0, SYSTEM_FLAG, born_ms, FIXED.size + len(meta) + len(body), 0)


def decode_system(rec: Record) -> tuple[str, dict[str, Any]]:
    """(kind, payload) of a system record; a body that is not a JSON object
    is a corrupt record (it passed the CRC, so it was written that way)."""
    try:
        payload = json.loads(rec.body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise CorruptRecordError(f"system record at {rec.physical_offset}: body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise CorruptRecordError(f"system record at {rec.physical_offset}: body is not a JSON object")
    return rec.tags, payload


class SystemRecords:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._recovered: list[tuple[str, dict[str, Any]]] = []

    def add_handler(self, kind: str, fn: Handler) -> None:
        """Apply records of `kind` with `fn`: those recovered so far now (in
        log order), every later one as it is appended or replicated."""
        self._handlers.setdefault(kind, []).append(fn)
        for k, payload in self._recovered:
            if k == kind:
                fn(payload)

    def recovered(self, kind: str, payload: dict[str, Any]) -> None:
        """Apply a record recovery found, and keep it for later handlers."""
        self._recovered.append((kind, payload))
        self.apply(kind, payload)

    def apply(self, kind: str, payload: dict[str, Any]) -> None:
        for fn in self._handlers.get(kind, ()):
            try:
                fn(payload)
            except Exception:
                log.exception("applying a %s system record failed: %s", kind, payload)
