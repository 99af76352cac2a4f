"""Recovery after unclean stops: torn and corrupted tails are cut for good."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from core.record import Message, decode_record
from core.store import MessageStore, ReadStatus, StoreConfig
from core.store.checkpoint import CHECKPOINT
from tests.helpers.store_tools import abandon, check_consistency, segment_files

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]


def fill(s: MessageStore, n: int, size: int = 700) -> list[tuple[int, int]]:
    s.create_topic("t", 2)
    out = []
    for i in range(n):
        out += s.append([Message("t", i % 2, bytes([i % 251]) * size, tags=f"g{i % 3}")])
    return out


def raw_file_bytes(data_dir: Path, offset: int, length: int, seg: int) -> bytes:
    path = data_dir / "commitlog" / f"{offset - offset % seg:020d}"
    with open(path, "rb") as f:
        f.seek(offset % seg)
        return f.read(length)


def flip(data_dir: Path, offset: int, seg: int) -> None:
    path = data_dir / "commitlog" / f"{offset - offset % seg:020d}"
    with open(path, "r+b") as f:
        f.seek(offset % seg)
        b = f.read(1)
        f.seek(offset % seg)
        f.write(bytes([b[0] ^ 0x5A]))


def test_clean_restart_scans_nothing(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    fill(s, 50)
    end = s.commitlog.max_offset
    s.close()
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.clean and s2.recovery.records_scanned == 0
    assert s2.commitlog.max_offset == end
    assert check_consistency(s2) == 50


def test_unclean_restart_keeps_everything_written(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    res = fill(s, 300)
    end = s.commitlog.max_offset
    abandon(s)
    s2 = open_store(tmp_path / "d")
    rep = s2.recovery
    assert not rep.clean and rep.cut_at is None and rep.bytes_cut == 0
    assert rep.end_offset == end == s2.commitlog.max_offset
    assert rep.records_scanned > 0
    assert check_consistency(s2) == 300
    assert s2.append([Message("t", 0, b"z")]) == [(end, 150)]
    assert res[-1][1] == 149


def test_flipped_byte_in_tail_is_cut_and_never_revived(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    seg = small_config.segment_bytes
    s = open_store(tmp_path / "d")
    res = fill(s, 300)
    end = s.commitlog.max_offset
    victim_idx = 290
    victim, _ = res[victim_idx]
    abandon(s)
    flip(tmp_path / "d", victim + 100, seg)  # a body byte of record 290

    s2 = open_store(tmp_path / "d")
    rep = s2.recovery
    assert rep.cut_at == victim and "crc" in (rep.cut_reason or "")
    assert rep.bytes_cut == end - victim
    assert s2.commitlog.max_offset == victim
    assert rep.cq_entries_dropped == 10
    assert check_consistency(s2) == 290
    # the bytes after the cut are really gone from the file
    assert raw_file_bytes(tmp_path / "d", victim, end - victim, seg).count(0) == end - victim
    # queue offsets continue where the kept records end
    assert s2.queue_offsets("t", 0) == (0, 145)
    r = s2.read("t", 0, 145, 10, 1 << 20)
    assert r.status is ReadStatus.NO_NEW_MSG
    p, q = s2.append([Message("t", 0, b"after-cut")])[0]
    assert (p, q) == (victim, 145)
    new_end = s2.commitlog.max_offset
    abandon(s2)

    s3 = open_store(tmp_path / "d")  # unclean again: nothing from before the cut comes back
    assert s3.recovery.cut_at is None
    assert s3.commitlog.max_offset == new_end
    assert check_consistency(s3) == 291
    r = s3.read("t", 0, 145, 10, 1 << 20)
    assert r.count == 1 and decode_record(r.data).body == b"after-cut"
    s3.close()
    s4 = open_store(tmp_path / "d")  # and a clean restart agrees
    assert s4.commitlog.max_offset == new_end and check_consistency(s4) == 291


def test_torn_last_record_is_cut(open_store: Open, tmp_path: Path, small_config: StoreConfig) -> None:
    """A record whose header landed but whose body did not (kill -9 mid-write)."""
    seg = small_config.segment_bytes
    s = open_store(tmp_path / "d")
    res = fill(s, 40)
    last, _ = res[-1]
    size = len(s.commitlog.record_at(last))
    abandon(s)
    path = tmp_path / "d" / "commitlog" / f"{last - last % seg:020d}"
    with open(path, "r+b") as f:  # zero the second half of the last record
        f.seek(last % seg + size // 2)
        f.write(bytes(size - size // 2))
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.cut_at == last
    assert s2.recovery.bytes_cut == size // 2  # only the non-zero part is data
    assert check_consistency(s2) == 39
    assert s2.append([Message("t", 1, b"z")])[0] == (last, 19)


def test_stale_record_after_end_is_not_revived(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    """A valid record lying past the cut point must not come back."""
    seg = small_config.segment_bytes
    s = open_store(tmp_path / "d")
    res = fill(s, 20, size=100)
    a, _ = res[17]
    b, _ = res[18]
    abandon(s)
    flip(tmp_path / "d", a + 70, seg)  # damage 17: 18 and 19 are intact but after the cut
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.cut_at == a
    # append records of exactly the size of 17, so 18's old position is reused
    s2.append([Message("t", 1, bytes([17]) * 100, tags="g2")])
    assert s2.commitlog.max_offset == b
    abandon(s2)
    s3 = open_store(tmp_path / "d")
    assert s3.commitlog.max_offset == b  # 18 and 19 stayed dead
    assert check_consistency(s3) == 18


def test_damage_in_a_sealed_segment_cuts_everything_after(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    seg = small_config.segment_bytes
    s = open_store(tmp_path / "d", checkpoint_interval_ms=3_600_000)
    fill(s, 200)  # about 2.2 segments; no checkpoint after open, so the scan starts at 0
    assert len([f for f in segment_files(tmp_path / "d") if int(f.name) < s.commitlog.max_offset]) >= 3
    victim = s.cqs.get("t", 0).entry(30)[0]  # type: ignore[union-attr]
    abandon(s)
    flip(tmp_path / "d", victim + 20, seg)
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.cut_at == victim
    assert s2.recovery.segments_removed  # later segments with data are deleted
    assert check_consistency(s2) == 60
    assert s2.queue_offsets("t", 0) == (0, 30) and s2.queue_offsets("t", 1) == (0, 30)


def test_lost_consume_queues_are_rebuilt_from_the_log(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    fill(s, 120)
    abandon(s)
    shutil.rmtree(tmp_path / "d" / "consumequeue")
    (tmp_path / "d" / CHECKPOINT).unlink()  # no checkpoint: rebuild from the start of the log
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.records_redispatched == 120
    assert check_consistency(s2) == 120
    assert s2.queue_offsets("t", 1) == (0, 60)


def test_consume_queue_entries_past_log_end_are_dropped(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    s = open_store(tmp_path / "d")
    res = fill(s, 30)
    cut, _ = res[25]
    abandon(s)
    # lose the log tail (e.g. pages never written back) but keep the queue entries
    seg = small_config.segment_bytes
    path = tmp_path / "d" / "commitlog" / f"{cut - cut % seg:020d}"
    with open(path, "r+b") as f:
        f.seek(cut % seg)
        f.write(bytes(seg - cut % seg))
    s2 = open_store(tmp_path / "d")
    assert s2.commitlog.max_offset == cut
    assert s2.recovery.cq_entries_dropped == 5
    assert check_consistency(s2) == 25
