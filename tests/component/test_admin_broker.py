"""The admin commands' broker side (core/admin) on real broker cores, a
master and its slave in this process: group rows, resets through the log,
messages by id and by key. Called as functions; the gRPC adapter is
checked once at the end."""

from __future__ import annotations

import time
import tracemalloc
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import generate_latest

from core.admin import groups as groups_module
from core.admin.groups import describe_groups
from core.admin.lookup import STOP_EVERY, find_messages, get_message
from core.admin.reset import Target, reset_offsets
from core.broker.admin_service import BrokerAdminService
from core.clock import now_ms
from core.errors import (
    GroupActiveError,
    InvalidArgumentError,
    MessageNotFoundError,
    RequestTimeoutError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.pull import PullArgs
from core.record import Message, decode_record
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def send(node: BrokerNode, topic: str, queue: int, n: int, keys: str = "", **props: str) -> list[int]:
    """Physical offsets of `n` messages sent to one queue."""
    msgs = [Message(topic, queue, b"m" * 100, keys=keys, properties=props or None) for _ in range(n)]
    out = node.core.leader().send(topic, queue, msgs)
    assert out.status.value == "SEND_OK", out.detail
    return [phys for phys, _q in out.results]


def test_group_rows_show_offsets_lag_members_and_the_last_pull(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 2)
    send(master, "T", 0, 10)
    core.leader().commit_offset("G", "T", 0, 4)
    core.heartbeat("G", "T", "c1", 10_000)
    core.pull(PullArgs("G", "T", 0, 4, 1, 1 << 20))
    rows = describe_groups(core, "G", "", now_ms())
    assert [(r["queue_id"], r["committed"], r["committed_offset"], r["max_offset"]) for r in rows] == [
        (0, True, 4, 10),
        (1, False, 0, 0),  # a live member's topic: every queue shows
    ]
    q0 = rows[0]
    assert q0["members"] == ["c1"] and q0["last_pull_ms"] > 0 and q0["suggested_broker_id"] == -1
    size = len(core.store.commitlog.record_at(send(master, "T", 1, 1)[0]))
    q0 = describe_groups(core, "G", "T", now_ms())[0]
    assert (q0["lag_bytes"], q0["lag_bytes_estimated"]) == (6 * size, False)
    assert q0["backlog_bytes"] == core.store.commitlog.max_offset - core.store.physical_offset_of("T", 0, 4)
    assert describe_groups(core, "other", "", now_ms()) == []
    with pytest.raises(InvalidArgumentError):
        describe_groups(core, "bad group!", "", now_ms())


def test_a_reset_is_refused_while_members_live_and_goes_through_the_log(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 2)
    send(master, "T", 0, 10)
    slave = nodes.slave(master)
    core.leader().commit_offset("G", "T", 0, 8)
    core.heartbeat("G", "T", "c1", 10_000)
    end = core.store.commitlog.max_offset
    plan, applied, members = reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, True, False, now_ms())
    assert (applied, members) == (False, ["c1"])  # a dry run shows the plan, even with members
    assert [(r["old_offset"], r["new_offset"]) for r in plan] == [(8, 0), (0, 0)]
    with pytest.raises(GroupActiveError, match="c1"):
        reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, False, False, now_ms())
    assert core.store.commitlog.max_offset == end and core.offsets.query("G", "T", 0) == 8  # nothing changed
    plan, applied, _ = reset_offsets(core, "G", "T", Target.OFFSET, 3, 0, False, True, now_ms())
    assert applied and core.offsets.query("G", "T", 0) == 3 and core.offsets.query("G", "T", 1) == 0
    poll_until(lambda: slave.core.offsets.query("G", "T", 0) == 3, 10, "the reset on the slave")
    with pytest.raises(UnknownTopicError):
        reset_offsets(core, "G", "nope", Target.LATEST, 0, 0, False, True, now_ms())
    with pytest.raises(InvalidArgumentError):
        reset_offsets(core, "%SYS%", "T", Target.LATEST, 0, 0, False, True, now_ms())


def test_a_reset_stopped_at_a_queue_says_which_queues_were_reset(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B3: a commit failing at queue k (a sync-replication timeout)
    left queues 0..k-1 reset while the error said nothing of them."""
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 3)
    for q in range(3):
        send(master, "T", q, 5)
        core.leader().commit_offset("G", "T", q, 5)
    leader = core.leader()
    real = leader.commit_offset

    def times_out_on_queue_1(group: str, topic: str, queue_id: int, offset: int) -> None:
        if queue_id == 1:
            raise RequestTimeoutError("no slave acknowledged in time")
        real(group, topic, queue_id, offset)

    monkeypatch.setattr(leader, "commit_offset", times_out_on_queue_1)
    monkeypatch.setattr(core, "leader", lambda: leader)
    with pytest.raises(RequestTimeoutError, match=r"stopped at queue 1 .*queues 0 were reset before it"):
        reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, False, False, now_ms())
    assert [core.offsets.query("G", "T", q) for q in range(3)] == [0, 5, 5]


def test_a_reset_to_a_time_lands_on_the_first_message_stored_since(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 3)
    time.sleep(0.01)
    at = int(time.time() * 1000)  # store times are wall-clock
    time.sleep(0.01)
    send(master, "T", 0, 2)
    plan, _, _ = reset_offsets(core, "G", "T", Target.TIME, 0, at, False, False, now_ms())
    assert plan[0]["new_offset"] == 3 and core.offsets.query("G", "T", 0) == 3
    plan, _, _ = reset_offsets(core, "G", "T", Target.TIME, 0, at + 60_000, True, False, now_ms())
    assert plan[0]["new_offset"] == 5  # nothing stored since: the end


def test_a_pop_group_is_not_reset(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 2)
    core.leader().popper.pop("P", "T", 0, 1, 10_000, 0, lambda: True, "")
    with pytest.raises(InvalidArgumentError, match="pop cursor"):
        reset_offsets(core, "P", "T", Target.EARLIEST, 0, 0, False, True, now_ms())
    assert describe_groups(core, "P", "T", now_ms())[0]["pop_inflight"] == 1


def test_a_message_is_got_by_its_offset_and_nothing_else_passes_for_one(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 1)
    first, second = send(master, "T", 0, 2, keys="k1")
    rec = decode_record(get_message(core.store, second, None))
    assert (rec.topic, rec.queue_offset, rec.physical_offset) == ("T", 1, second)
    for bad in (first + 1, second + 5, core.store.commitlog.max_offset, 1 << 60, 0):
        with pytest.raises(MessageNotFoundError):  # mid-record, past the end, a system record
            get_message(core.store, bad, None)
    with pytest.raises(MessageNotFoundError, match="confirmed"):
        get_message(core.store, second, second + 1)
    slave = nodes.slave(master)
    poll_until(
        lambda: slave.core.store.commitlog.max_offset == core.store.commitlog.max_offset, 10, "caught up"
    )
    assert get_message(slave.core.store, second, None) == get_message(core.store, second, None)


def test_messages_are_found_by_key_or_rocketmq_id_within_the_scan(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 2)
    (a,) = send(master, "T", 0, 1, keys="order-7 shop-1")
    send(master, "T", 1, 30, keys="noise")
    (b,) = send(master, "T", 1, 1, keys="order-7")
    (c,) = send(master, "T", 0, 1, UNIQ_KEY="0A0B0C")
    found, scanned, complete = find_messages(core.store, "T", "order-7", 0, 0, None)
    assert [decode_record(r).physical_offset for r in found] == [b, a]  # newest first
    assert (scanned, complete) == (33, True)
    assert [
        decode_record(r).physical_offset for r in find_messages(core.store, "T", "0A0B0C", 0, 0, None)[0]
    ] == [c]
    found, scanned, complete = find_messages(core.store, "T", "order-7", 1, 0, None)
    assert [decode_record(r).physical_offset for r in found] == [b]  # `a` is past the scan's bound
    assert (scanned, complete) == (2, False)  # each queue's newest entry only
    assert find_messages(core.store, "T", "order", 0, 0, None)[0] == []  # whole keys only
    for bad in ({"key": ""}, {"max_scan": 2_000_000}):
        with pytest.raises(InvalidArgumentError):
            find_messages(core.store, "T", bad.get("key", "k"), int(bad.get("max_scan", 0)), 0, None)


def test_a_find_with_a_common_key_keeps_only_what_it_answers(nodes: Nodes) -> None:
    """Review B5: every match was kept as raw bytes and cut to max_found only
    at the end, so a key every message carries held the whole scan in
    memory (1e6 x queues records). Now at most max_found are held."""
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    for _ in range(4):
        send_sized(master, 500, b"x" * 1000, keys="tenant-42")
    tracemalloc.start()
    try:
        found, scanned, complete = find_messages(master.core.store, "T", "tenant-42", 0, 4, None)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(found), scanned, complete) == (4, 2000, True)
    assert peak < 500_000, peak  # the 2000 matches are 2 MB: only the 4 kept were held
    newest = master.core.store.commitlog.max_offset - len(found[0])
    assert decode_record(found[0]).physical_offset == newest  # still the newest first


def test_a_find_answer_is_bounded_in_bytes_and_stops_when_the_caller_is_gone(nodes: Nodes) -> None:
    """Review B5: no byte bound (32 x 4 MiB passes the 64 MiB gRPC limit,
    failing after the whole scan) and no look at the caller: a scan went on
    after the client had given up."""
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    send_sized(master, 3000, b"y" * 100, keys="k")
    size = len(find_messages(master.core.store, "T", "k", 0, 1, None)[0][0])
    found, _scanned, complete = find_messages(master.core.store, "T", "k", 0, 32, None, max_bytes=3 * size)
    assert len(found) == 3 and not complete  # the three newest; incomplete: matches were left out
    gone = SimpleNamespace(is_active=lambda: False, time_remaining=lambda: 5.0)
    svc = BrokerAdminService(master.core)
    r = svc.FindMessages(pb.FindMessagesRequest(topic="T", key="k"), gone)  # type: ignore[arg-type]
    assert r.scanned == STOP_EVERY and not r.complete  # stopped at the first look, not after 3000
    near = SimpleNamespace(is_active=lambda: True, time_remaining=lambda: 0.1)
    assert svc.FindMessages(pb.FindMessagesRequest(topic="T", key="k"), near).scanned == STOP_EVERY  # type: ignore[arg-type]


def send_sized(node: BrokerNode, n: int, body: bytes, keys: str) -> None:
    for i in range(0, n, 250):
        msgs = [Message("T", 0, body, keys=keys) for _ in range(min(250, n - i))]
        assert node.core.leader().send("T", 0, msgs).status.value == "SEND_OK"


def test_the_consumer_lag_gauge_is_bounded_and_forgets_idle_groups(nodes: Nodes) -> None:
    """Review B7: one series per (group, topic, queue) in the offsets table,
    which never shrinks and which any account with `groups = ["*"]` grows by
    committing under new names. Now at most MAX_LAG_SERIES (the most
    recently moved), the rest counted, and a group whose commits have not
    moved for LAG_IDLE_MS has none."""
    master = nodes.master()
    core = master.core
    core.lag_series = groups_module.LagSeries(max_series=5)
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 10)
    for i in range(20):
        core.leader().commit_offset(f"G{i}", "T", 0, 1)

    def series() -> dict[str, float]:
        text = generate_latest(core.metrics.registry).decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("tailrace_consumer_lag_messages{"):
                out[line.split('group="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("tailrace_consumer_lag_series_dropped "):
                out["dropped"] = float(line.rsplit(" ", 1)[1])
        return out

    first = series()
    assert len(first) == 6 and first["dropped"] == 15  # 5 series, 15 left out
    core.leader().commit_offset("G7", "T", 0, 4)  # moved since: kept first
    assert series()["G7"] == 6
    idle = groups_module.LAG_IDLE_MS
    t0 = now_ms()
    core.leader().commit_offset("G3", "T", 0, 5)
    groups_module.committed_lags(core, t0 + idle)  # G3 moved a day on; the others did not
    lags, dropped = groups_module.committed_lags(core, t0 + idle + 1000)
    assert list(lags) == [("G3", "T", 0)] and dropped == 0  # the idle groups are gone


def test_the_admin_service_answers_over_grpc(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    (phys,) = send(master, "T", 0, 1, keys="k")
    with grpc.insecure_channel(master.address) as ch:
        stub = broker_pb2_grpc.BrokerAdminStub(ch)
        r = stub.GetMessage(pb.GetMessageRequest(physical_offset=phys), timeout=5)
        assert decode_record(r.record).keys == "k" and r.broker_name == "g"
        with pytest.raises(grpc.RpcError) as info:
            stub.GetMessage(pb.GetMessageRequest(physical_offset=phys + 1), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.ResetOffset(pb.ResetOffsetRequest(group="G", topic="T"), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no target: nothing done
        assert master.core.offsets.query("G", "T", 0) is None
