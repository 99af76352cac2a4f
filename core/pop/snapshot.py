"""The pop state beside the log: `pop.json`, a snapshot of the table as of a
log offset `at` (every `pop` record below it applied, none above).

The log is the state's record; the snapshot only spares a start from walking
all of it. At open the table is the snapshot plus the `pop` records from
`at` on (`load`); without a usable snapshot it is every `pop` record the log
still holds.

The snapshot is written on the store's checkpoint (every
store.checkpoint_interval_ms, on masters and slaves, whether or not anyone
pops: an empty table is written too), at a clean close, and never anywhere
else (`save`): under the store's write lock, so no `pop` record is applied
meanwhile and the table is exactly the log below `at`; the log is flushed
to `at` before the file names it. A start after a crash then walks only the
log since the last checkpoint. A divergent-tail cut removes it (`discard`).

A snapshot is used only if it names a place in this log: `at` within the
log's range and the CRC of the bytes just below `at` (`fp`) matching. One
that does not (past the end, below the first record kept, from a log a cut
rewrote, damaged) is deleted and the state rebuilt from the whole log: a
snapshot older than the log's start would make what the removed records
handed out look acked, while rebuilt it comes back (the `c` rule below).
A walk that meets a damaged record is logged and counted, and the broker
starts with what was read (the snapshot, or nothing): what it missed comes
back as redeliveries (at least once), never as a failed start.

Records lost to retention below the first one kept are what `state.py`
handles as "first seen mid-history" (the `c` rule): their queue's unknown
span comes back (at least once), never skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CorruptRecordError
from core.pop.state import Entry, PopTable, QueueState
from core.sidefiles import Damage, read_json, write_json
from core.store import MessageStore
from core.store.commitlog import CommitLog

log = logging.getLogger(__name__)
POP_FILE = "pop.json"
FP_BYTES = 64
_file_lock = threading.Lock()  # one writer of pop.json (and its .tmp) at a time


@dataclass(frozen=True)
class Loaded:
    start: int  # the log offset the walk began at
    replayed: int  # pop records applied from the log
    errors: int  # walks a damaged record ended (logged)


def fingerprint(clog: CommitLog, at: int) -> int:
    """CRC32 of the (up to FP_BYTES) log bytes below `at` in its segment: the
    same offset in a log a cut rewrote almost never has the same bytes."""
    back = min(at % clog.segment_bytes, FP_BYTES)
    view = clog.view(at - back, back) if back else None
    return zlib.crc32(b"" if view is None else bytes(view))


def dump(table: PopTable, at: int) -> dict[str, Any]:
    queues = []
    with table.lock:
        for key in table.queues():
            q = table.get(key)
            assert q is not None
            entries = [[o, e.deadline_ms, e.attempt, e.gen] for o, e in sorted(q.inflight.items())]
            queues.append([*key, q.cursor, q.next_gen, entries])
    return {"at": at, "queues": queues}


def _parse(raw: Any) -> tuple[int, int, dict[tuple[str, str, int], QueueState]]:
    at, fp = int(raw["at"]), int(raw["fp"])
    out = {}
    for group, topic, queue, cursor, next_gen, entries in raw["queues"]:
        q = QueueState(int(cursor), int(next_gen))
        for o, dl, attempt, gen in entries:
            q.inflight[int(o)] = Entry(int(dl), int(attempt), int(gen))
        out[(str(group), str(topic), int(queue))] = q
    return at, fp, out


def save(table: PopTable, store: MessageStore, directory: Path) -> None:
    """Write the snapshot as of the log's end: copied under the store's write
    lock (no `pop` record is applied meanwhile), the log flushed to `at`
    before the file names it. A failure is logged: the log still has it all."""
    clog = store.commitlog
    try:
        with store.write_lock:
            at = clog.max_offset
            data = dump(table, at)
            data["fp"] = fingerprint(clog, at)
        clog.flush()
        with _file_lock:
            write_json(directory / POP_FILE, data)
    except Exception:
        log.exception("the pop state snapshot was not written (the log still holds the state)")


def discard(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / POP_FILE)


def load(table: PopTable, store: MessageStore, directory: Path) -> Loaded:
    """Fill `table` from the snapshot and the log after it. Never raises for
    what is on disk: a snapshot that does not fit this log is deleted, and a
    damaged record ends the walk (logged, counted in `errors`)."""
    clog = store.commitlog
    found = None
    try:
        found = read_json(directory / POP_FILE, _parse)
    except Damage as exc:
        log.error("%s is damaged (%s): the pop state is rebuilt from the log", POP_FILE, exc)
        discard(directory)
    start = clog.min_offset
    if found is not None:
        at, fp, queues = found
        why = None
        if at > clog.max_offset:
            why = f"past the log's end {clog.max_offset}"
        elif at < clog.min_offset:  # its cursors would make what those records handed out look acked
            why = f"below the log's first offset {clog.min_offset} (retention removed the records after it)"
        elif fp != fingerprint(clog, at):
            why = "not from this log (a cut rewrote it)"
        if why is None:
            table.restore(queues)
            start = at
        else:
            log.warning("%s at %d is %s: deleted, the pop state is rebuilt from the log", POP_FILE, at, why)
            discard(directory)
    try:
        payloads = store.system_payloads("pop", start)
    except CorruptRecordError as exc:
        log.error(
            "the pop records from %d on could not be read (%s): starting with the state read so far "
            "(what was missed is redelivered)",
            start,
            exc,
        )
        return Loaded(start, 0, 1)
    replayed = 0
    for p in payloads:
        try:
            table.apply(p)
            replayed += 1
        except (KeyError, TypeError, ValueError):
            continue  # skipped (and counted) where it was first applied
    return Loaded(start, replayed, 0)
