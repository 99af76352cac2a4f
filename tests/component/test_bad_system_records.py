"""A system record whose CRC is valid but whose body is not a JSON object
(written that way: every copy of the log holds it) is stored and skipped
everywhere alike, logged and counted; it never keeps a master or a slave
from starting or from replicating (issue 16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from core.record import Message
from core.store import MessageStore
from core.store.system import encode_system
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until
from tests.helpers.nodes import Nodes, nodes
from tests.helpers.store_tools import abandon, check_consistency, log_records

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
Open = Callable[..., MessageStore]


def append_garbage_system_record(store: MessageStore, kind: str = "offset") -> int:
    """Append a `kind` system record whose body is CRC-valid bytes that are not
    JSON (as a bug or a flipped bit before the CRC would); returns its offset."""
    topic, meta, body, qid, flags, born, size, th = encode_system(kind, {"group": "g", "offset": 1}, 0)
    garbage = b"\xff" * len(body)
    return store._append_prepared([(topic, meta, garbage, qid, flags, born, size, th)], [])[0][0]


def fill(store: MessageStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append([Message("t", i % 2, f"m-{i}".encode() * 20)])


def test_a_store_restarts_past_a_system_record_that_is_not_json(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("t", 2)
    fill(s, 10)
    append_garbage_system_record(s)
    s.append_system("topic", {"name": "later", "queues": 3})  # a good one after it still applies
    fill(s, 10, 10)
    end = s.commitlog.max_offset
    abandon(s)  # unclean: recovery scans and replays the system records
    s2 = open_store(tmp_path / "d")
    assert s2.commitlog.max_offset == end and check_consistency(s2) == 20
    assert s2.system_records_skipped == 1
    assert s2.topics.queue_count("later") == 3
    assert s2.system_payloads("offset") == []  # a truncation's undo walks past it too


def test_a_slave_replicates_and_restarts_past_a_system_record_that_is_not_json(
    open_store: Open, tmp_path: Path
) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    master.create_topic("t", 2)
    fill(master, 5)
    bad = append_garbage_system_record(master)
    master.append_system("offset", {"group": "g", "topic": "t", "queue": 0, "offset": 3, "prev": -1})
    fill(master, 5, 5)
    data, _ = master.read_log(0, 1 << 20)
    assert slave.append_replicated(0, data) == master.commitlog.max_offset
    assert log_records(slave) == log_records(master)  # byte-identical, the bad record included
    assert slave.system_records_skipped == 1 and check_consistency(slave) == 10
    assert bad in [p for p, _ in log_records(slave)]
    abandon(slave)
    again = open_store(tmp_path / "s")
    assert again.commitlog.max_offset == master.commitlog.max_offset
    assert again.system_records_skipped == 1 and check_consistency(again) == 10


def test_a_slave_broker_catches_up_past_it_and_counts_it(nodes: Nodes) -> None:
    master = nodes.master()
    store = master.core.store
    master.core.leader().create_topic("t", 2)
    fill(store, 5)
    append_garbage_system_record(store)
    master.core.leader().commit_offset("g", "t", 1, 2)  # queue 1 holds 2 of the 5 (a commit stays in range)
    fill(store, 5, 5)
    slave = nodes.slave(master)

    def caught_up(node: BrokerNode) -> bool:
        return node.core.store.commitlog.max_offset == store.commitlog.max_offset

    poll_until(lambda: caught_up(slave), 10, "the slave replicated past the bad record")
    assert slave.core.offsets.query("g", "t", 1) == 2  # what follows it applied
    text = generate_latest(slave.core.metrics.registry).decode()
    assert "tailrace_system_records_skipped 1.0" in text
    slave.stop()
    nodes.started.remove(slave)
    fill(store, 3, 10)
    again = nodes.slave(master)  # it restarts, and replicates on
    poll_until(lambda: caught_up(again), 10, "the restarted slave caught up")
