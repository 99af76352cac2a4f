"""Retention and the disk's high watermark: what a full disk may and may not do.

Decision (issue 16): a full disk never deletes data. Retention deletes whole
CommitLog segments by age only (`retention_hours`), never the segment being
written, and never one holding messages a consumer group with live members
has not read yet (`floor`, from the broker's committed offsets), unless the
operator chose `retention_deletes_unconsumed`. When the disk is past
`disk_max_used_ratio`, sends are refused instead (`disk_full`: DISK_FULL)
until space returns. Before this, a disk over 90 % made retention delete
every segment but the current one, unconsumed backlog included.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.store.commitlog import CommitLog
from core.store.config import StoreConfig
from core.store.cqset import ConsumeQueueSet

log = logging.getLogger(__name__)
SAMPLE_S = 0.1


def disk_used_ratio(path: Path) -> float:
    """How full the disk holding `path` is, 0..1 (a statvfs: microseconds)."""
    usage = shutil.disk_usage(path)
    return usage.used / usage.total if usage.total else 0.0


class Retention:
    def __init__(
        self,
        data_dir: Path,
        commitlog: CommitLog,
        cqs: ConsumeQueueSet,
        config: StoreConfig,
        write_lock: Any,
        disk_used_ratio: Callable[[], float] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.commitlog = commitlog
        self.cqs = cqs
        self.config = config
        self.write_lock = write_lock
        self._disk_used_ratio = disk_used_ratio or self._measure_disk
        self._sample = (-1.0, 0.0)  # (when, ratio): sampled at most every SAMPLE_S
        # the lowest CommitLog offset a live consumer group still has to read
        # (None: nothing held back); the broker sets it
        self.floor: Callable[[], int | None] = lambda: None
        self._held_back = ""

    def _measure_disk(self) -> float:
        return disk_used_ratio(self.data_dir)

    def disk_full(self) -> bool:
        """Is the data disk past its high watermark (`disk_max_used_ratio`)?
        Sampled at most every `SAMPLE_S` (a statvfs: microseconds): sends ask
        on every call, and a fast writer fills a small disk in a second."""
        now = time.monotonic()
        when, ratio = self._sample
        if now - when >= SAMPLE_S:
            ratio = self._disk_used_ratio()
            self._sample = (now, ratio)
        return ratio > self.config.disk_max_used_ratio

    def enforce(self, now_ms: int) -> list[str]:
        """Delete the segments retention allows (see the module docstring);
        returns their names."""
        max_age_ms = self.config.retention_hours * 3600 * 1000
        floor = None if self.config.retention_deletes_unconsumed else self.floor()
        deleted: list[str] = []
        while True:
            segs = self.commitlog.segments()
            if len(segs) < 2:
                break
            oldest = segs[0]
            age_ms = now_ms - oldest.path.stat().st_mtime * 1000
            if age_ms <= max_age_ms:
                break
            oldest_end = self.commitlog.min_offset + self.commitlog.segment_bytes
            if floor is not None and floor < oldest_end:  # it holds what a live group still reads
                held = f"{oldest.path.name}: a live consumer group has not read it (at offset {floor})"
                if held != self._held_back:
                    log.warning("retention keeps %s", held)
                    self._held_back = held
                break
            with self.write_lock:
                gone = self.commitlog.delete_oldest()
            if gone is None:
                break
            deleted.append(gone.path.name)
            log.info("retention deleted segment %s (age %.1f h)", gone.path.name, age_ms / 3_600_000)
        if deleted:
            with self.write_lock:
                self.cqs.set_log_min(self.commitlog.min_offset)
        return deleted
