"""The pop state beside the log: `pop.json`, a snapshot of the table as of a
log offset `at` (every `pop` record below it applied, none above).

The log is the state's record; the snapshot only spares a start from walking
all of it. At open the table is the snapshot plus the `pop` records from
`at` on (`load`); without a usable snapshot (none, damaged, or past the
log's end) it is every `pop` record the log still holds. The snapshot is
written at a clean close (`save`, by BrokerCore.close) and by the master's
revive pass every `SNAPSHOT_EVERY` records or so; a divergent-tail cut
removes it (`discard`): past the cut it would describe records that are gone.

Records lost to retention below the first one kept are what `state.py`
handles as "first seen mid-history": their queue's unknown span comes back
(at least once), never skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from core.pop.state import Entry, PopTable, QueueState
from core.sidefiles import Damage, read_json, write_json
from core.store import MessageStore

log = logging.getLogger(__name__)
POP_FILE = "pop.json"


def dump(table: PopTable, at: int) -> dict[str, Any]:
    queues = []
    with table.lock:
        for key in table.queues():
            q = table.get(key)
            assert q is not None
            entries = [[o, e.deadline_ms, e.attempt, e.gen] for o, e in sorted(q.inflight.items())]
            queues.append([*key, q.cursor, q.next_gen, entries])
    return {"at": at, "queues": queues}


def _parse(raw: Any) -> tuple[int, dict[tuple[str, str, int], QueueState]]:
    at = int(raw["at"])
    out = {}
    for group, topic, queue, cursor, next_gen, entries in raw["queues"]:
        q = QueueState(int(cursor), int(next_gen))
        for o, dl, attempt, gen in entries:
            q.inflight[int(o)] = Entry(int(dl), int(attempt), int(gen))
        out[(str(group), str(topic), int(queue))] = q
    return at, out


def save(table: PopTable, directory: Path, at: int) -> None:
    """Write the snapshot as of log offset `at` (the caller holds every pop
    append off meanwhile). A failure is logged: the log still has it all."""
    try:
        write_json(directory / POP_FILE, dump(table, at))
    except Exception:
        log.exception("the pop state snapshot was not written (the log still holds the state)")


def discard(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / POP_FILE)


def load(table: PopTable, store: MessageStore, directory: Path) -> int:
    """Fill `table` from the snapshot and the log after it; returns how many
    records were replayed."""
    clog = store.commitlog
    found = None
    try:
        found = read_json(directory / POP_FILE, _parse)
    except Damage as exc:
        log.error("%s is damaged (%s): the pop state is rebuilt from the log", POP_FILE, exc)
    start = clog.min_offset
    if found is not None and found[0] <= clog.max_offset:
        at, queues = found
        table.restore(queues)
        if at < clog.min_offset:
            log.warning("pop records between %d and %d are gone from the log (retention)", at, start)
        start = max(at, start)
    replayed = 0
    for p in store.system_payloads("pop", start):
        try:
            table.apply(p)
            replayed += 1
        except (KeyError, TypeError, ValueError):
            continue  # skipped (and counted) where it was first applied
    return replayed
