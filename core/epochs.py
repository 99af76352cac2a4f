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
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.errors import CorruptRecordError
from core.fileutil import atomic_write

EPOCHS = "epochs.json"
History = tuple[tuple[int, int], ...]  # (epoch, start offset), ascending


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

    def __init__(self, directory: Path, log_end: int) -> None:
        self.path = directory / EPOCHS
        self._lock = threading.Lock()
        entries: list[tuple[int, int]] = []
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            entries = [(int(e), int(s)) for e, s in raw["epochs"]]
        # a crash between cutting the log and rewriting this file leaves
        # entries past the log's end: they name bytes that are gone
        kept = tuple(x for x in entries if x[1] < log_end)
        self._history: History = kept
        if len(kept) != len(entries):
            self._persist(kept)

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
        atomic_write(self.path, json.dumps({"epochs": [list(x) for x in history]}).encode())
