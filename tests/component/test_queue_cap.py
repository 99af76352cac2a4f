"""ConsumeQueues under a tiny `cq_max_open` (issue 16): queues are unmapped
and mapped again, or never loaded, while dispatch, reads, long polls,
retention, recovery (with a cut), truncation, a log reset and replication
go on; every answer stays what it would be with every queue mapped."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from consumer import Producer
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import Message, decode_record, iter_records
from core.store import MessageStore, ReadStatus, StoreConfig
from deploy.harness import poll_until
from tests.helpers.nodes import Nodes, nodes
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture

SEG = 64 * 1024
CAP2 = StoreConfig(
    segment_bytes=SEG, max_message_bytes=16 * 1024, warm_segments=False, cq_max_open=2, cq_entries_per_file=64
)
QUEUES = 6


def key_of(i: int) -> tuple[str, int]:
    """The queue the i-th message of `fill` goes to: all 12, in turn."""
    return "ab"[i % 2], (i // 2 * 5) % QUEUES


def fill(s: MessageStore, n: int, start: int = 0) -> list[tuple[int, int]]:
    s.create_topic("a", QUEUES)
    s.create_topic("b", QUEUES)
    out = []
    for i in range(start, start + n):
        topic, q = key_of(i)
        out += s.append([Message(topic, q, f"m{i}".encode() * 40, tags=f"g{i % 3}")])
    return out


def observe(s: MessageStore) -> dict[tuple[str, int], tuple[int, int, list[tuple[int, bytes]]]]:
    """Every queue's offsets and what a read from its minimum returns."""
    out = {}
    for topic in "ab":
        for q in range(QUEUES):
            lo, hi = s.queue_offsets(topic, q)
            got: list[tuple[int, bytes]] = []
            off = lo
            while off < hi:
                r = s.read(topic, q, off, 7, 1 << 20)
                got += [(rec.queue_offset, rec.body) for rec in iter_records(r.data)]
                off = r.next_queue_offset
            out[(topic, q)] = (lo, hi, got)
    return out


def mapped_at_most(s: MessageStore, n: int) -> None:
    assert s.cqs.mapped_count() <= n, s.cqs.open_keys()


def test_same_answers_with_two_mapped_queues_as_with_all(tmp_path: Path) -> None:
    small = MessageStore(tmp_path / "small", CAP2)
    full = MessageStore(tmp_path / "full", replace(CAP2, cq_max_open=1024))
    for s in (small, full):
        fill(s, 600)  # 64-entry files: most queues roll over several
    assert observe(small) == observe(full)
    mapped_at_most(small, 2)
    assert small.cqs._open.unmaps > 100

    # retention: queues unmapped at the time are corrected at their next use
    now = int(time.time() * 1000) + 10**9
    assert small.enforce_retention(now) == full.enforce_retention(now) != []
    assert observe(small) == observe(full)
    lo, _ = small.queue_offsets("a", 0)
    assert small.read("a", 0, 0, 1, 1 << 20).status is ReadStatus.OFFSET_TOO_SMALL and lo > 0
    mapped_at_most(small, 2)
    for s in (small, full):
        s.close()

    # a clean reopen loads nothing until asked; then the same answers
    small = MessageStore(tmp_path / "small", CAP2)
    full = MessageStore(tmp_path / "full", replace(CAP2, cq_max_open=1024))
    assert small.cqs.queues == {} and small.cqs.count() == 2 * QUEUES
    assert observe(small) == observe(full)
    assert fill(small, 50, 600) == fill(full, 50, 600)
    assert check_consistency(small) == check_consistency(full)
    small.close()
    full.close()


def test_a_cut_below_the_checkpoint_trims_queues_loaded_later(tmp_path: Path) -> None:
    s = MessageStore(tmp_path / "d", CAP2)
    res = fill(s, 300)
    s._checkpoint()  # dispatched = the end: recovery re-dispatches nothing
    victim = res[200][0]
    end = s.commitlog.max_offset
    abandon(s)
    path = tmp_path / "d" / "commitlog" / f"{victim - victim % SEG:020d}"
    with open(path, "r+b") as f:  # a body byte of record 200
        f.seek(victim % SEG + 100)
        b = f.read(1)
        f.seek(victim % SEG + 100)
        f.write(bytes([b[0] ^ 0x5A]))

    s = MessageStore(tmp_path / "d", CAP2)
    assert s.recovery.cut_at == victim and s.commitlog.max_offset == victim < end
    assert s.cqs.queues == {}  # no queue was loaded by recovery: each is trimmed as it loads
    assert check_consistency(s) == 200
    assert s.cqs.dropped_on_load == 100
    # the next message of each queue continues right after its last kept one
    topic, q = key_of(300)
    kept = sum(1 for j in range(200) if key_of(j) == (topic, q))
    assert s.append([Message(topic, q, b"after")]) == [(victim, kept)]
    abandon(s)
    s = MessageStore(tmp_path / "d", CAP2)
    assert check_consistency(s) == 201
    s.close()


def test_truncate_and_reset_reach_queues_not_loaded(tmp_path: Path) -> None:
    s = MessageStore(tmp_path / "d", CAP2)
    res = fill(s, 200)
    s.close()
    s = MessageStore(tmp_path / "d", CAP2)
    cut = res[150][0]
    s.truncate_to(cut)  # a slave ahead of its new master
    assert check_consistency(s) == 150
    # the next message of record 150's queue takes the offset record 150 had
    assert fill(s, 1, 150) == [(cut, sum(1 for j in range(150) if key_of(j) == key_of(150)))]
    s.close()

    s = MessageStore(tmp_path / "d", CAP2)
    s.reset_log(SEG * 8)  # a slave too far behind: everything goes, loaded or not
    assert s.cqs.count() == 0 and list((tmp_path / "d" / "consumequeue").iterdir()) == []
    s.create_topic("a", QUEUES)
    assert s.append([Message("a", 3, b"x")]) == [(SEG * 8, 0)]
    s.close()


def test_reads_dispatch_and_flushes_race_without_error(tmp_path: Path) -> None:
    cfg = replace(CAP2, cq_max_open=3, checkpoint_interval_ms=5, flush_interval_ms=5, segment_bytes=1 << 20)
    s = MessageStore(tmp_path / "d", cfg)
    s.create_topic("a", 12)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                q = rnd.randrange(12)
                lo, hi = s.queue_offsets("a", q)
                r = s.read("a", q, rnd.randrange(lo, hi + 1), 50, 1 << 20)
                recs = list(iter_records(r.data))
                assert [x.queue_offset for x in recs] == list(
                    range(r.next_queue_offset - len(recs), r.next_queue_offset)
                )
                assert all(x.body == f"{q}:{x.queue_offset}".encode() for x in recs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    counts = [0] * 12
    rnd = random.Random(7)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not errors:
        q = rnd.randrange(12)
        n = rnd.randrange(1, 20)
        s.append([Message("a", q, f"{q}:{counts[q] + k}".encode()) for k in range(n)])
        counts[q] += n
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.queue_offsets("a", q)[1] for q in range(12)] == counts
    mapped_at_most(s, 3 + 3)  # the cap, plus what readers may still pin
    abandon(s)
    s = MessageStore(tmp_path / "d", cfg)
    assert check_consistency(s) == sum(counts)
    s.close()


def test_held_long_poll_wakes_on_an_unmapped_queue_and_a_slave_replicates(nodes: Nodes) -> None:
    cap = {"store.cq_max_open": 2}
    m = nodes.master(cap)
    slave = nodes.slave(m, overrides=cap)
    with Producer(m.address) as prod:
        prod.send("T", b"first", queue_id=0)  # auto-creates T (4 queues)
        channel = grpc.insecure_channel(m.address)
        try:
            stub = broker_pb2_grpc.BrokerStub(channel)
            req = pb.PullRequest(group="g", topic="T", queue_id=0, queue_offset=1, max_wait_ms=10_000)
            held = stub.Pull.future(req)
            poll_until(lambda: m.core.held_pulls() == 1, 5, "the pull is held")
            for q in (1, 2, 3):
                prod.send("T", f"q{q}".encode(), queue_id=q)
            cq0 = m.core.store.cqs.queues[("T", 0)]
            assert not cq0.mapped  # the held pull's queue was unmapped meanwhile
            prod.send("T", b"second", queue_id=0)
            r = held.result(timeout=10)
            assert r.status == pb.FOUND
            assert [(x.queue_offset, x.body) for x in iter_records(r.records)] == [(1, b"second")]
        finally:
            channel.close()
    store = slave.core.store
    poll_until(
        lambda: store.commitlog.max_offset == m.core.store.commitlog.max_offset, 10, "the slave caught up"
    )
    for q, bodies in {0: [b"first", b"second"], 1: [b"q1"], 2: [b"q2"], 3: [b"q3"]}.items():
        r = store.read("T", q, 0, 10, 1 << 20)
        assert [decode_record(r.data[:]).body] == bodies[:1] and r.count == len(bodies)
    assert store.cqs.mapped_count() <= 2
