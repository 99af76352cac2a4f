"""Epoch history: which master epoch wrote which part of the log.

A broker promoted to master for epoch E appends an `epoch` system record at
the end of its log (offset S) before it takes any write, so the history
(E, S) travels through the log to every slave and survives recovery like any
other record. `epochs.json` is the applied state (atomic rewrite, fsync).

Before a slave replicates, the master compares the two histories
(`divergence_point`, Kafka's leader-epoch rule): the slave keeps its log up to
the end of the last epoch both have, as far as both agree, and truncates the
rest. The slave repeats the computation over the master's history (checked
with `history_fault`) and cuts only to the point it proves itself
(`SlaveSession.on_handshake_reply`). Epoch 0 (before any controller) is
implicit at offset 0 in every history.

A damaged or missing `epochs.json` is rebuilt from the log's `epoch`
records, under the rule in core/sidefiles.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.errors import CorruptRecordError
from core.sidefiles import (
    LogHistory,
    count,
    load_or_rebuild,
    need,
    write_json,
)

EPOCHS = "epochs.json"
History = tuple[tuple[int, int], ...]  # (epoch, start offset), ascending
ADVICE = (
    "restore it from a backup, or move it aside and start again: it is then rebuilt from the epoch "
    "records the log still holds (a history missing its early epochs can make this broker cut more "
    "of its log than it must when it follows), or empty this broker's data dir so that it "
    "replicates everything again"
)


def _parse(raw: Any) -> list[tuple[int, int]]:
    need(isinstance(raw, dict) and isinstance(raw.get("epochs"), list), "no epochs list")
    entries = []
    for item in raw["epochs"]:
        need(isinstance(item, list) and len(item) == 2, f"entry {item!r}")
        entries.append((count(item[0], "epoch", 1), count(item[1], "start")))
    fault = history_fault(tuple(entries), (1 << 64) - 1)
    need(not fault, fault)
    return entries


def _replay(payloads: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The history the log's `epoch` records make (applied as `EpochFile.add` does)."""
    out: list[tuple[int, int]] = []
    for p in payloads:
        try:
            epoch, start = int(p["epoch"]), int(p["start"])
        except (KeyError, TypeError, ValueError):
            continue
        if (not out or (epoch > out[-1][0] and start >= out[-1][1])) and epoch > 0 and start >= 0:
            out.append((epoch, start))
    return out


def end_of(history: History, epoch: int, log_end: int) -> int:
    """Where `epoch` ends in a log with this history: the start of the next
    epoch, or the log's end for the last one."""
    for e, start in history:
        if e > epoch:
            return min(start, log_end)
    return log_end


def divergence_point(leader: History, leader_end: int, follower: History, follower_end: int) -> int:
    """The offset up to which the follower's log agrees with the leader's.

    Epochs are elected once and written by one broker, so an epoch in both
    histories names the same bytes; the follower keeps what the last common
    epoch covers in both logs."""
    common = max({0, *(e for e, _ in leader)} & {0, *(e for e, _ in follower)})
    return min(end_of(leader, common, leader_end), end_of(follower, common, follower_end))


def history_fault(history: History, log_end: int) -> str:
    """Why `history` cannot be that of a log ending at `log_end` ('' when it can).

    Each epoch is elected once, after the previous one (strictly increasing,
    above the implicit epoch 0), and starts where the log then ended: never
    before the previous epoch's start, never past the log's end."""
    prev_epoch, prev_start = 0, 0
    for epoch, start in history:
        if epoch <= prev_epoch:
            return f"epoch {epoch} follows epoch {prev_epoch}"
        if start < prev_start:
            return f"epoch {epoch} starts at {start}, before {prev_start}"
        if start > log_end:
            return f"epoch {epoch} starts at {start}, past the log's end {log_end}"
        prev_epoch, prev_start = epoch, start
    return ""


class EpochFile:
    """This broker's epoch history, persisted next to the store."""

    def __init__(self, directory: Path, log_end: int, history: LogHistory | None = None) -> None:
        """Load `epochs.json`; with `history` (the store's log), rebuild it
        when damaged or missing (core/sidefiles.py). Without it a damaged
        file raises DamagedFileError."""
        self.path = directory / EPOCHS
        self._lock = threading.Lock()
        found = load_or_rebuild(self.path, _parse, history, ADVICE, "epoch", _replay)
        entries = found or []
        # a crash between cutting the log and rewriting this file leaves
        # entries past the log's end: they name bytes that are gone
        kept = tuple(x for x in entries if x[1] < log_end)
        self._history: History = kept
        if len(kept) != len(entries) or not self.path.exists():
            self._persist(kept)  # rebuilt, or new: then a missing file means a lost one

    @property
    def history(self) -> History:
        return self._history

    @property
    def last_epoch(self) -> int:
        return self._history[-1][0] if self._history else 0

    def apply(self, payload: dict[str, Any]) -> None:
        """An `epoch` system record (appended here, replicated or recovered)."""
        self.add(int(payload["epoch"]), int(payload["start"]))

    def add(self, epoch: int, start: int) -> None:
        with self._lock:
            if self._history and epoch <= self._history[-1][0]:
                return  # already known (recovery replays records)
            if self._history and start < self._history[-1][1]:
                raise CorruptRecordError(f"epoch {epoch} starts at {start}, before its predecessor")
            updated = (*self._history, (epoch, start))
            self._persist(updated)
            self._history = updated

    def truncate_from(self, offset: int) -> None:
        """The log was cut at `offset`: epochs that began there or later are gone."""
        with self._lock:
            kept = tuple(x for x in self._history if x[1] < offset)
            if kept != self._history:
                self._persist(kept)
                self._history = kept

    def replace(self, entries: Iterable[tuple[int, int]]) -> None:
        """Adopt the master's history (a slave that restarted empty mid-log)."""
        with self._lock:
            updated = tuple(entries)
            self._persist(updated)
            self._history = updated

    def _persist(self, history: History) -> None:
        write_json(self.path, {"epochs": [list(x) for x in history]})
