"""Retention deletes whole old segments; minimum offsets follow."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.record import Message, iter_records
from core.store import MessageStore, ReadStatus
from deploy.waits import poll_until
from tests.conftest import SMALL
from tests.helpers.store_tools import abandon, check_consistency, segment_files

pytestmark = pytest.mark.component
HOUR_MS = 3_600_000


def fill(s: MessageStore, n: int) -> None:
    s.create_topic("t", 2)
    for i in range(0, n, 10):
        s.append([Message("t", j % 2, str(j).encode() * 100) for j in range(i, i + 10)])


def data_segments(s: MessageStore) -> list[Path]:
    return [f for f in segment_files(s.data_dir) if int(f.name) < s.commitlog.max_offset]


def test_young_segments_are_kept(tmp_path: Path) -> None:
    with MessageStore(tmp_path, SMALL) as s:
        fill(s, 400)
        before = data_segments(s)
        assert s.enforce_retention(now_ms=int(time.time() * 1000)) == []
        assert data_segments(s) == before


def test_old_segments_deleted_and_min_offsets_move(tmp_path: Path) -> None:
    cfg = replace(SMALL, retention_hours=1.0)
    with MessageStore(tmp_path, cfg) as s:
        fill(s, 600)
        segs = data_segments(s)
        assert len(segs) >= 4
        active = segs[-1]
        deleted = s.enforce_retention(now_ms=int(time.time() * 1000) + 2 * HOUR_MS)
        assert deleted == [p.name for p in segs[:-1]]
        assert [p.name for p in data_segments(s)] == [active.name]
        assert s.commitlog.min_offset == int(active.name)
        for q in (0, 1):
            lo, hi = s.queue_offsets("t", q)
            assert 0 < lo < hi == 300
            assert s.cqs.get("t", q).entry(lo)[0] >= int(active.name)  # type: ignore[union-attr]
            assert s.cqs.get("t", q).entry(lo - 1)[0] < int(active.name)  # type: ignore[union-attr]
            r = s.read("t", q, 0, 10, 1 << 20)
            assert (r.status, r.next_queue_offset, r.min_offset) == (
                ReadStatus.OFFSET_TOO_SMALL,
                lo,
                lo,
            )
            r = s.read("t", q, lo, 1000, 1 << 30)
            assert r.count == hi - lo
            first = next(iter_records(r.data))
            assert first.queue_offset == lo
        # whole consume-queue files below the new minimum are gone too
        cq_files = sorted((tmp_path / "consumequeue" / "t" / "0").iterdir())
        assert int(cq_files[0].name) <= s.queue_offsets("t", 0)[0] < int(cq_files[0].name) + 64
        s.append([Message("t", 0, b"more")])
        assert check_consistency(s) == 600 - sum(s.queue_offsets("t", q)[0] for q in (0, 1)) + 1
        mins = [s.queue_offsets("t", q) for q in (0, 1)]
    with MessageStore(tmp_path, cfg) as s2:  # minimums survive a clean restart
        assert s2.commitlog.min_offset == int(active.name)
        assert [s2.queue_offsets("t", q) for q in (0, 1)] == mins
        r = s2.read("t", 0, 0, 10, 1 << 20)
        assert (r.status, r.next_queue_offset) == (ReadStatus.OFFSET_TOO_SMALL, mins[0][0])
        abandon(s2)
    with MessageStore(tmp_path, cfg) as s3:  # and an unclean one
        assert not s3.recovery.clean
        assert [s3.queue_offsets("t", q) for q in (0, 1)] == mins


def test_a_full_disk_deletes_nothing_and_refuses_instead(tmp_path: Path) -> None:
    """Issue 16: over the watermark, retention used to delete every segment
    but the current one, unconsumed backlog included. Now it deletes nothing
    (young segments), and the store says the disk is full, so sends are
    refused (master/leader.py) until space returns."""
    ratio = [0.97]
    with MessageStore(tmp_path, SMALL, disk_used_ratio=lambda: ratio[0]) as s:
        fill(s, 600)
        segs = data_segments(s)
        assert len(segs) > 2
        assert s.enforce_retention() == [] and data_segments(s) == segs
        assert s.disk_full()
        ratio[0] = 0.5
        poll_until(lambda: not s.disk_full(), 5, "the next disk sample (at most one a second)")


def test_age_retention_keeps_what_a_live_group_has_not_read(tmp_path: Path) -> None:
    later = int(time.time() * 1000) + 1000 * HOUR_MS  # every segment is old by then
    with MessageStore(tmp_path, SMALL) as s:
        fill(s, 600)
        segs = data_segments(s)
        s.retention_floor = lambda: int(segs[1].name) + 10  # a group is reading segment 1
        assert s.enforce_retention(now_ms=later) == [segs[0].name]  # segment 0: read by all
        assert data_segments(s) == segs[1:]
        assert s.enforce_retention(now_ms=later) == []  # segment 1 is kept for that group
    cfg = dataclasses.replace(SMALL, retention_deletes_unconsumed=True)
    with MessageStore(tmp_path, cfg) as s:  # unless the operator chose otherwise
        s.retention_floor = lambda: int(segs[1].name) + 10
        assert s.enforce_retention(now_ms=later) == [p.name for p in segs[1:-1]]


def test_the_segment_being_written_is_never_deleted(tmp_path: Path) -> None:
    with MessageStore(tmp_path, SMALL, disk_used_ratio=lambda: 1.0) as s:
        fill(s, 600)
        s.enforce_retention(now_ms=int(time.time() * 1000) + 1000 * HOUR_MS)
        assert len(data_segments(s)) == 1
        s.append([Message("t", 1, b"still writable")])
        assert s.read("t", 1, 300, 1, 1 << 20).count == 1
