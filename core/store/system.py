"""System records: topic definitions and consumer-offset commits as records
in the log (topic `__sys`, flag SYSTEM_FLAG, tags = kind, JSON body), so
slaves learn them by replication and recovery replays them.

`SystemRecords` holds the handlers that apply them, per kind. Every path that
adds a record to the log applies it in log order: the append paths under the
store's write lock (the publish step), recovery as it opens the store. A
handler registered after recovery gets the recovered records replayed.

Two kinds of failure, told apart by what the handler raises:

- the applied state cannot be written (OSError, StorageFullError: a full
  disk, a file-size limit): on the append paths the record must not stay in
  the log while its state is missing, so `apply` raises StorageFullError and
  the publish step undoes the append (the client is told). When replaying
  recovered records it is logged and the store still opens;
- the record's content cannot be applied (a body that is not a JSON object,
  a payload of the wrong shape): it passed its CRC, so it was written that
  way and every copy of the log holds it. It is skipped everywhere alike (a
  master's append, a slave's replication, recovery, a truncation's undo),
  logged and counted in `skipped`: the logs stay byte-identical and the
  applied states agree, and no broker is kept from starting or replicating.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from core.errors import CorruptRecordError, StorageFullError, brief
from core.record import (
    BLANK_MIN,
    FIXED,
    SYSTEM_FLAG,
    SYSTEM_TOPIC,
    Record,
    decode_record,
    encode_meta,
    frames,
)
from core.store.commitlog import CommitLog, Prepared

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
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
        raise CorruptRecordError(f"system record at {rec.physical_offset}: body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise CorruptRecordError(f"system record at {rec.physical_offset}: body is not a JSON object")
    return rec.tags, payload


def log_payloads(clog: CommitLog, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """The payloads of the system records of `kind` in [start, stop) of the
    log, in log order; a record whose body is not a JSON object is left out
    (it was never applied either).

    A walk over the segments that checks framing but decodes only system
    records (no CRC: the log was validated when it was written or
    recovered): used to roll back applied state around a truncation and to
    rebuild a side file, both rare."""
    out: list[dict[str, Any]] = []
    end = clog.max_offset if stop is None else min(stop, clog.max_offset)
    start = max(start, clog.min_offset)
    seg_bytes = clog.segment_bytes
    for seg in clog.segments():
        base = int(seg.path.name)
        if base + seg_bytes <= start or base >= end:
            continue
        pos = max(0, start - base)  # record-aligned: callers pass record offsets
        limit = min(seg_bytes, end - base)
        view = seg.view
        walk = frames(view, pos, limit, base=base, room=seg_bytes - BLANK_MIN, verify=False, until_blank=True)
        for topic, head in walk:  # ends at the segment's end marker
            total, flags = head[0], head[4]
            if flags & SYSTEM_FLAG and topic == SYSTEM_TOPIC:
                rec = decode_record(view[pos : pos + total], verify=False)
                if rec.tags == kind:
                    with contextlib.suppress(CorruptRecordError):
                        out.append(decode_system(rec)[1])
            pos += total
    return out


class SystemRecords:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._recovered: list[tuple[str, dict[str, Any]]] = []
        self.skipped = 0  # records whose content could not be applied (a metric)

    def skip(self, why: str) -> None:
        """A system record that cannot be applied: log it and count it."""
        self.skipped += 1
        log.error("system record skipped (%d so far): %s", self.skipped, why)

    def add_handler(self, kind: str, fn: Handler) -> None:
        """Apply records of `kind` with `fn`: those recovered so far now (in
        log order), every later one as it is appended or replicated."""
        self._handlers.setdefault(kind, []).append(fn)
        for k, payload in self._recovered:
            if k == kind:
                self._run(fn, kind, payload, strict=False)

    def recovered(self, kind: str, payload: dict[str, Any]) -> None:
        """Apply a record recovery found, and keep it for later handlers."""
        self._recovered.append((kind, payload))
        for fn in self._handlers.get(kind, ()):
            self._run(fn, kind, payload, strict=False)

    def apply(self, kind: str, payload: dict[str, Any]) -> None:
        """Apply an appended or replicated record; StorageFullError if its
        state cannot be written (the caller undoes the append)."""
        for fn in self._handlers.get(kind, ()):
            self._run(fn, kind, payload, strict=True)

    def _run(self, fn: Handler, kind: str, payload: dict[str, Any], strict: bool) -> None:
        try:
            fn(payload)
        except (OSError, StorageFullError) as exc:
            if not strict:
                log.exception("applying a recovered %s system record failed: %s", kind, brief(payload))
            elif isinstance(exc, StorageFullError):
                raise
            else:
                raise StorageFullError(f"cannot apply a {kind} record: {exc}") from exc
        except Exception as exc:
            self.skip(f"a {kind} record that cannot be applied ({exc!r}): {brief(payload)}")
