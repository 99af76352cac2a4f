"""MessageStore on real files: append, read, segments, ConsumeQueue files, restart."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.record import BLANK_MAGIC, PREFIX, Message, decode_record, iter_records, tag_hash
from core.store import MessageStore, ReadStatus, StoreConfig
from tests.helpers.store_tools import check_consistency, segment_files

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]


def test_append_returns_offsets_and_read_returns_stored_bytes(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 2)
    msgs = [
        Message(
            "t",
            i % 2,
            f"body-{i}".encode(),
            tags="A",
            keys=f"k{i}",
            properties={"i": str(i)},
            flags=i,
            born_ms=1000 + i,
        )
        for i in range(10)
    ]
    res = s.append(msgs)
    assert [q for _, q in res] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [p for p, _ in res] == sorted(p for p, _ in res)
    r = s.read("t", 1, 0, 100, 1 << 20)
    assert r.status is ReadStatus.FOUND and r.count == 5 and r.next_queue_offset == 5
    recs = list(iter_records(r.data))
    assert [x.body for x in recs] == [f"body-{i}".encode() for i in range(1, 10, 2)]
    for x, i in zip(recs, range(1, 10, 2), strict=True):
        assert (x.queue_id, x.tags, x.keys, x.properties, x.flags, x.born_ms) == (
            1,
            "A",
            f"k{i}",
            {"i": str(i)},
            i,
            1000 + i,
        )
        assert x.physical_offset == res[i][0]
        assert x.store_ms > 0
    assert bytes(s.commitlog.record_at(res[1][0])) == r.data[: recs[0].size]


def test_read_statuses(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    assert s.read("t", 0, 0, 1, 1024).status is ReadStatus.NO_NEW_MSG
    assert s.read("t", 0, 5, 1, 1024).status is ReadStatus.OFFSET_OVERFLOW
    s.append([Message("t", 0, b"x")] * 3)
    assert s.read("t", 0, 3, 1, 1024).status is ReadStatus.NO_NEW_MSG
    r = s.read("t", 0, 9, 1, 1024)
    assert (r.status, r.next_queue_offset) == (ReadStatus.OFFSET_OVERFLOW, 3)
    assert s.queue_offsets("t", 0) == (0, 3)


def test_read_limits_and_at_least_one(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    s.append([Message("t", 0, b"x" * 1000) for _ in range(10)])
    assert s.read("t", 0, 0, 3, 1 << 20).count == 3
    r = s.read("t", 0, 0, 100, 2500)
    assert r.count == 2 and len(r.data) <= 2500 and r.next_queue_offset == 2
    r = s.read("t", 0, 0, 100, 10)  # smaller than one record: still one
    assert r.count == 1 and r.next_queue_offset == 1
    assert r.next_physical_offset == s.cqs.get("t", 0).entry(1)[0]  # type: ignore[union-attr]
    r = s.read("t", 0, 9, 100, 1 << 20)
    assert r.next_physical_offset == s.commitlog.max_offset


def test_tag_filter_skips_on_the_consume_queue(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    s.append([Message("t", 0, str(i).encode(), tags="A" if i % 3 == 0 else "B") for i in range(30)])
    want = {tag_hash("A")}
    r = s.read("t", 0, 0, 100, 1 << 20, tag_filter=want.__contains__)
    assert [int(x.body) for x in iter_records(r.data)] == list(range(0, 30, 3))
    assert r.next_queue_offset == 30
    none = s.read("t", 0, 0, 100, 1 << 20, tag_filter=lambda h: False)
    assert none.status is ReadStatus.NO_MATCHED_MSG and none.next_queue_offset == 30


def test_records_never_span_segments(open_store: Open, small_config: StoreConfig) -> None:
    s = open_store()
    s.create_topic("t", 3)
    seg = small_config.segment_bytes
    sizes = [1, 500, 3000, 7, 15000, 64, 9000]
    res = []
    for i in range(300):
        res += s.append([Message("t", i % 3, bytes([i % 256]) * sizes[i % len(sizes)])])
    assert len(segment_files(s.data_dir)) > 10
    for phys, _ in res:
        raw = s.commitlog.record_at(phys)
        assert phys // seg == (phys + len(raw) - 1) // seg
    # every sealed segment ends with an end-of-segment marker
    markers = 0
    end = s.commitlog.max_offset
    sealed = [f for f in segment_files(s.data_dir) if int(f.name) + seg <= end]
    assert len(sealed) > 10
    for seg_file in sealed:
        start = int(seg_file.name)
        scan_end = start
        for hdr in s.commitlog.scan(start, start + seg):
            scan_end = hdr.physical_offset + hdr.size
        if scan_end < start + seg:
            view = s.commitlog.view(scan_end, 8)
            assert view is not None
            total, magic = PREFIX.unpack(view)
            assert magic == BLANK_MAGIC and total == start + seg - scan_end
            markers += 1
    assert markers == len(sealed)
    assert check_consistency(s) == 300
    for q in range(3):
        r = s.read("t", q, 0, 1000, 1 << 30)
        assert r.count == 100
        assert [x.body for x in iter_records(r.data)] == [
            bytes([i % 256]) * sizes[i % len(sizes)] for i in range(q, 300, 3)
        ]


def test_record_that_exactly_fills_a_segment_is_placed_next(
    open_store: Open, small_config: StoreConfig
) -> None:
    s = open_store()
    s.create_topic("t", 1)
    seg = small_config.segment_bytes
    first = s.append([Message("t", 0, b"a")])[0][0]
    overhead = len(s.commitlog.record_at(first)) - 1  # record size minus body
    # fill until exactly one 100-byte-body record plus the 8-byte marker room is left
    need = seg - s.commitlog.max_offset - (overhead + 100) - 8
    while need > 0:
        chunk = min(need, 15_000)
        if need - chunk and need - chunk < overhead:
            chunk = need - overhead
        s.append([Message("t", 0, b"f" * (chunk - overhead))])
        need -= chunk
    assert s.commitlog.max_offset == seg - (overhead + 100) - 8
    p, _ = s.append([Message("t", 0, b"x" * 100)])[0]
    assert p // seg == 0 and s.commitlog.max_offset == seg - 8
    p2, _ = s.append([Message("t", 0, b"y")])[0]
    assert p2 == seg  # a record never eats the marker's room: it starts the next segment
    check_consistency(s)


def test_consume_queue_rolls_files_and_survives_restart(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "a")
    s.create_topic("t", 1)
    for i in range(5):
        s.append([Message("t", 0, f"{i}-{j}".encode()) for j in range(50)])
    cq_files = sorted((s.data_dir / "consumequeue" / "t" / "0").iterdir())
    assert [f.name for f in cq_files] == [f"{n:020d}" for n in (0, 64, 128, 192)]
    assert all(f.stat().st_size == 64 * 20 for f in cq_files)
    s.close()
    s2 = open_store(tmp_path / "a")
    assert s2.recovery.clean
    assert s2.queue_offsets("t", 0) == (0, 250)
    r = s2.read("t", 0, 200, 100, 1 << 20)
    assert [x.body for x in iter_records(r.data)] == [f"4-{j}".encode() for j in range(50)]
    p, q = s2.append([Message("t", 0, b"next")])[0]
    assert q == 250 and p == s.commitlog.max_offset
    check_consistency(s2)


def test_concurrent_appenders_get_distinct_contiguous_offsets(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    got: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(50):
            res = s.append([Message("t", 0, str(n).encode())] * 4)
            with lock:
                got.extend(q for _, q in res)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(800))
    assert check_consistency(s) == 800


def test_decode_of_what_read_returns_matches_log(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    ((p, _),) = s.append([Message("t", 0, b"abc", tags="T")])
    rec = decode_record(bytes(s.commitlog.record_at(p)))
    assert rec.body == b"abc" and rec.tags == "T"
