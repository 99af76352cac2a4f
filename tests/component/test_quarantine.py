"""Recovery keeps what it cuts: a cut tail (a bad record mid-log and
everything after it, later segments included) goes to `<data>/quarantine/`,
logged and counted, never deleted, and never read back (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from core.errors import StorageFullError
from core.record import Message
from core.store import MessageStore, ReadStatus, StoreConfig
from tests.component.test_recovery import fill, flip
from tests.helpers.nodes import Nodes, nodes
from tests.helpers.store_tools import abandon, check_consistency, segment_files

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
Open = Callable[..., MessageStore]


def used_bytes(path: Path) -> bytes:
    return path.read_bytes().rstrip(b"\0")


def damaged_mid_log(open_store: Open, data: Path) -> tuple[int, dict[str, bytes]]:
    """A log of ~2.2 segments with a flipped byte in queue 0's record 30 (the
    first segment): (its offset, what the cut will remove:
    segment name -> its bytes from the cut on, trailing zeroes dropped)."""
    s = open_store(data, checkpoint_interval_ms=3_600_000)  # no checkpoint: the scan starts at 0
    fill(s, 200)
    victim = s.cqs.get("t", 0).entry(30)[0]  # type: ignore[union-attr]
    seg = s.commitlog.segment_bytes
    abandon(s)
    flip(data, victim + 20, seg)
    tail = {}
    for f in segment_files(data):
        base = int(f.name)
        if base + seg <= victim:
            continue
        raw = f.read_bytes()[max(0, victim - base) :].rstrip(b"\0")
        if raw:
            tail[f.name] = raw
    assert len(tail) >= 2  # the cut reaches into later segments
    return victim, tail


def test_a_cut_tail_is_kept_in_quarantine_and_never_revived(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    data = tmp_path / "d"
    victim, tail = damaged_mid_log(open_store, data)
    s2 = open_store(data)
    rep = s2.recovery
    assert rep.cut_at == victim and rep.segments_removed
    # kept, whole: the cut segment's rest under the cut offset, later segments as they were
    assert rep.quarantined is not None
    folder = Path(rep.quarantined)
    assert folder.parent == data / "quarantine"
    note = json.loads((folder / "cut.json").read_text())
    assert note["cut_at"] == victim and "crc" in note["reason"]
    assert note["bytes"] == rep.bytes_quarantined == rep.bytes_cut == sum(len(b) for b in tail.values())
    first, *later = sorted(tail)
    assert used_bytes(folder / f"{victim:020d}") == tail[first]
    for name in later:
        assert used_bytes(folder / f"{name}.segment") == tail[name]
    assert s2.quarantined() == (1, rep.bytes_cut)
    assert check_consistency(s2) == 60
    s2.append([Message("t", 0, b"after-the-cut")])
    end2 = s2.commitlog.max_offset
    abandon(s2)
    for _ in range(2):  # unclean, then clean: nothing from the quarantine comes back
        s3 = open_store(data)
        assert s3.recovery.cut_at is None and s3.commitlog.max_offset == end2
        assert check_consistency(s3) == 61
        assert s3.queue_offsets("t", 0) == (0, 31)
        assert s3.read("t", 0, 31, 10, 1 << 20).status is ReadStatus.NO_NEW_MSG
        assert s3.quarantined() == (1, rep.bytes_cut)  # kept across restarts, never deleted
        s3.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["cut.json", f"{victim:020d}", *(f"{n}.segment" for n in later)]
    )


def test_a_torn_last_record_is_kept_too(open_store: Open, tmp_path: Path, small_config: StoreConfig) -> None:
    seg = small_config.segment_bytes
    s = open_store(tmp_path / "d")
    res = fill(s, 40)
    last, _ = res[-1]
    size = len(s.commitlog.record_at(last))
    abandon(s)
    path = tmp_path / "d" / "commitlog" / f"{last - last % seg:020d}"
    with open(path, "r+b") as f:  # the second half of the last record never landed
        f.seek(last % seg + size // 2)
        f.write(bytes(size - size // 2))
        f.seek(last % seg)
        half = f.read(size // 2)
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.cut_at == last and s2.recovery.bytes_quarantined == size // 2
    assert used_bytes(Path(s2.recovery.quarantined or "") / f"{last:020d}") == half.rstrip(b"\0")


def test_a_clean_log_quarantines_nothing(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    fill(s, 50)
    abandon(s)
    s2 = open_store(tmp_path / "d")
    assert s2.recovery.quarantined is None and not (tmp_path / "d" / "quarantine").exists()
    assert s2.quarantined() == (0, 0)


def test_when_the_cut_cannot_be_kept_nothing_is_cut(open_store: Open, tmp_path: Path) -> None:
    data = tmp_path / "d"
    victim, tail = damaged_mid_log(open_store, data)
    (data / "quarantine").write_text("a file where the folder should be")
    with pytest.raises(StorageFullError, match="nothing was cut"):
        open_store(data)
    for name, raw in tail.items():  # every byte is still in the log
        f = data / "commitlog" / name
        assert raw in f.read_bytes()
    (data / "quarantine").unlink()
    s = open_store(data)
    assert s.recovery.cut_at == victim and s.recovery.bytes_quarantined == s.recovery.bytes_cut


def test_the_broker_counts_its_quarantined_tails_in_metrics(
    open_store: Open, nodes: Nodes, tmp_path: Path
) -> None:
    data = tmp_path / "master"  # the data dir Nodes gives the master
    victim, _tail = damaged_mid_log(open_store, data)
    small = {"store.segment_bytes": 64 * 1024, "store.max_message_bytes": 16 * 1024}
    master = nodes.master({**small, "store.cq_entries_per_file": 64})
    assert master.core.store.recovery.cut_at == victim
    text = generate_latest(master.core.metrics.registry).decode()
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("tailrace_quarantined")
    }
    kept = master.core.store.recovery.bytes_quarantined
    assert kept > 0 and values == {"tailrace_quarantined_tails": 1.0, "tailrace_quarantined_bytes": kept}
