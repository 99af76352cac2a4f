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

from consumer import Admin, admin_topics
from core.admin import groups as groups_module
from core.admin.groups import describe_groups
from core.admin.lookup import STOP_EVERY, find_messages, get_message
from core.admin.reset import Target, reset_offsets
from core.admin.topics import delete_topic
from core.broker.admin_service import BrokerAdminService
from core.clock import now_ms
from core.errors import (
    GroupActiveError,
    InvalidArgumentError,
    InvalidTopicError,
    MessageNotFoundError,
    NotMasterError,
    RequestTimeoutError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.pull import PullArgs
from core.record import Message, decode_record
from core.route import GroupRoute, TopicRoute
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until
from master import pop_commits
from master.popper import Popper
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
    out = reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, True, False, now_ms())
    assert (out.applied, out.members) == (False, ["c1"])  # a dry run shows the plan, even with members
    assert [(r["old_offset"], r["new_offset"]) for r in out.plan] == [(8, 0), (0, 0)]
    with pytest.raises(GroupActiveError, match="c1"):
        reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, False, False, now_ms())
    assert core.store.commitlog.max_offset == end and core.offsets.query("G", "T", 0) == 8  # nothing changed
    assert reset_offsets(core, "G", "T", Target.OFFSET, 3, 0, False, True, now_ms()).applied
    assert core.offsets.query("G", "T", 0) == 3 and core.offsets.query("G", "T", 1) == 0
    poll_until(lambda: slave.core.offsets.query("G", "T", 0) == 3, 10, "the reset on the slave")
    with pytest.raises(UnknownTopicError):
        reset_offsets(core, "G", "nope", Target.LATEST, 0, 0, False, True, now_ms())
    with pytest.raises(InvalidArgumentError):
        reset_offsets(core, "%SYS%", "T", Target.LATEST, 0, 0, False, True, now_ms())


def test_a_broker_groups_reset_is_one_batch_so_its_queues_move_together(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B3: committing queue by queue, a failure at queue k left queues
    0..k-1 reset. A broker group's reset is now one batch of records: every
    queue moves, or (the batch refused) none does."""
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 3)
    for q in range(3):
        send(master, "T", q, 5)
        core.leader().commit_offset("G", "T", q, 5)
    batches: list[list[tuple[str, dict[str, object]]]] = []
    real = core.store.append_systems

    def counted(records: list[tuple[str, dict[str, object]]]) -> object:
        batches.append(list(records))
        return real(records)

    monkeypatch.setattr(core.store, "append_systems", counted)
    reset_offsets(core, "G", "T", Target.EARLIEST, 0, 0, False, False, now_ms())
    assert len(batches) == 1 and len(batches[0]) == 3  # one append for the three queues
    assert [core.offsets.query("G", "T", q) for q in range(3)] == [0, 0, 0]

    def refused(records: list[tuple[str, dict[str, object]]]) -> object:
        raise RequestTimeoutError("the store refused the batch")

    monkeypatch.setattr(core.store, "append_systems", refused)
    with pytest.raises(RequestTimeoutError):
        reset_offsets(core, "G", "T", Target.LATEST, 0, 0, False, False, now_ms())
    assert [core.offsets.query("G", "T", q) for q in range(3)] == [0, 0, 0]  # none moved


def test_a_reset_to_a_time_lands_on_the_first_message_stored_since(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 3)
    time.sleep(0.01)
    at = int(time.time() * 1000)  # store times are wall-clock
    time.sleep(0.01)
    send(master, "T", 0, 2)
    plan = reset_offsets(core, "G", "T", Target.TIME, 0, at, False, False, now_ms()).plan
    assert plan[0]["new_offset"] == 3 and core.offsets.query("G", "T", 0) == 3
    plan = reset_offsets(core, "G", "T", Target.TIME, 0, at + 60_000, True, False, now_ms()).plan
    assert plan[0]["new_offset"] == 5  # nothing stored since: the end


def test_a_pop_groups_reset_moves_its_cursor_and_pops_land_there(nodes: Nodes) -> None:
    """Through the RPCs: refused while the group pops (nothing written), a dry
    run shows the cursor and what is in flight, forced it moves cursor and
    committed offset on master and slave, drops what was in flight (its
    handles go stale), and the next pops start where asked."""
    master = nodes.master({"broker.pop_commit_interval_ms": 0})
    core = master.core
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 10)
    slave = nodes.slave(master)
    with grpc.insecure_channel(master.address) as ch:
        admin, broker = broker_pb2_grpc.BrokerAdminStub(ch), broker_pb2_grpc.BrokerStub(ch)

        def pop(n: int) -> list[pb.PoppedRecord]:
            req = pb.PopRequest(group="P", topic="T", queue_id=0, max_messages=n, invisible_ms=60_000)
            return list(broker.Pop(req, timeout=5).messages)

        def reset(offset: int, **kw: bool) -> pb.ResetOffsetResponse:
            req = pb.ResetOffsetRequest(group="P", topic="T", target=pb.RESET_OFFSET, offset=offset, **kw)
            return admin.ResetOffset(req, timeout=5)

        old = pop(3)
        end = core.store.commitlog.max_offset
        with pytest.raises(grpc.RpcError) as info:
            reset(7)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "popped" in str(
            info.value.details()
        )
        assert core.store.commitlog.max_offset == end and core.pops.get(("P", "T", 0)).cursor == 3  # type: ignore[union-attr]
        dry = reset(7, dry_run=True)
        (q,) = dry.queues
        assert (q.popped, q.pop_cursor, q.pop_inflight, q.new_offset) == (
            True,
            3,
            3,
            7,
        ) and dry.last_pop_ms > 0
        assert not dry.applied and core.store.commitlog.max_offset == end
        assert reset(7, force=True).applied
        for c in (core, slave.core):
            poll_until(lambda c=c: c.offsets.query("P", "T", 0) == 7, 10, "the reset replicated")
            st = c.pops.get(("P", "T", 0))
            assert st is not None and (st.cursor, st.inflight) == (7, {})
        assert [m.queue_offset for m in pop(2)] == [7, 8]
        acks = broker.AckPop(pb.AckPopRequest(group="P", topic="T", receipt_handles=[old[0].receipt_handle]))
        assert [r.error_code for r in acks.results] == ["INVALID_RECEIPT_HANDLE"]  # dropped by the reset
        core.leader().popper.revive_once()  # (acked nothing: the commit point stays at 7)
        assert core.offsets.query("P", "T", 0) == 7
        earliest = pb.ResetOffsetRequest(group="P", topic="T", target=pb.RESET_EARLIEST, force=True)
        assert admin.ResetOffset(earliest, timeout=5).applied
        assert [m.queue_offset for m in pop(10)] == list(range(10))  # back to the start, all of it
    assert describe_groups(core, "P", "T", now_ms())[0]["pop_inflight"] == 10


def test_a_revive_commit_read_before_a_reset_is_not_written_after_it(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revive pass reads a queue's commit point, then appends its commit:
    a reset coming in between must not be written over by the old point."""
    master = nodes.master({"broker.pop_commit_interval_ms": 0})
    core = master.core
    core.leader().create_topic("T", 1)
    send(master, "T", 0, 5)
    popper = core.leader().popper
    popper.close()  # the revive pass by hand only
    popper.ack_all("P", "T", [m.handle for m in popper.pop("P", "T", 0, 5, 60_000).messages])
    assert core.pops.commit_point(("P", "T", 0)) == 5 and core.offsets.query("P", "T", 0) is None
    read = pop_commits._ahead
    calls = []

    def reset_between(p: Popper, key: tuple[str, str, int]) -> tuple[int | None, int | None]:
        seen = read(p, key)
        if not calls:  # the first read, outside the pop lock: the operator's reset comes now
            reset_offsets(core, "P", "T", Target.EARLIEST, 0, 0, False, True, now_ms())
        calls.append(seen)
        return seen

    monkeypatch.setattr(pop_commits, "_ahead", reset_between)
    popper.revive_once()
    assert calls[0] == (5, None)  # it had read the old point
    assert core.offsets.query("P", "T", 0) == 0 and core.pops.commit_point(("P", "T", 0)) == 0


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


def test_a_topic_is_deleted_through_the_log_on_master_and_slave(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 2)
    core.leader().create_topic("keep", 1)
    send(master, "T", 0, 5)
    send(master, "keep", 0, 1)
    slave = nodes.slave(master)
    core.leader().commit_offset("G", "T", 0, 3)
    core.leader().commit_offset("G", "keep", 0, 1)
    core.leader().popper.pop("P", "T", 0, 2, 60_000, 0, lambda: True, "")
    core.leader().lock_queues("L", "T", "c1", [1], 60_000)
    end = core.store.commitlog.max_offset
    with pytest.raises(InvalidArgumentError, match="force"):
        delete_topic(core, "%RETRY%G", False, False)
    with pytest.raises(InvalidTopicError):
        delete_topic(core, "%SCHEDULE%", False, True)
    with pytest.raises(UnknownTopicError):
        delete_topic(core, "nope", False, False)
    what, deleted = delete_topic(core, "T", True, False)  # a dry run says what would go
    assert not deleted and core.store.commitlog.max_offset == end
    assert (what["messages"], what["groups"], what["pop_inflight"]) == (5, ["G", "P"], 2)
    assert what["offsets"] == [{"group": "G", "queue_id": 0, "offset": 3}]
    with pytest.raises(NotMasterError):  # a write: the master's
        delete_topic(slave.core, "T", False, False)
    _, deleted = delete_topic(core, "T", False, False)
    assert deleted and core.store.topics.queue_count("T") is None
    for c in (core, slave.core):
        poll_until(lambda c=c: c.store.topics.queue_count("T") is None, 10, "the deletion replicated")
        assert c.offsets.query("G", "T", 0) is None and c.offsets.query("G", "keep", 0) == 1
        st = c.pops.get(("P", "T", 0))
        assert st is not None and (st.cursor, st.inflight) == (0, {})
        assert not (c.store.data_dir / "consumequeue" / "T").exists()
        assert describe_groups(c, "", "T", now_ms()) == []
    assert core.leader().queue_locks.holder("L", "T", 1, now_ms()) is None
    # re-created (auto-create on send), it starts at queue offset 0 on both
    send(master, "T", 0, 1)
    assert core.store.queue_offsets("T", 0) == (0, 1)
    poll_until(lambda: slave.core.store.next_queue_offset("T", 0) == 1, 10, "the slave agrees")
    assert slave.core.store.queue_offsets("T", 0) == (0, 1)
    assert (
        core.leader().popper.pop("P", "T", 0, 1, 60_000, 0, lambda: True, "").messages[0].record.queue_offset
        == 0
    )


def test_the_admin_service_deletes_a_topic_over_grpc(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    send(master, "T", 0, 2)
    with grpc.insecure_channel(master.address) as ch:
        stub = broker_pb2_grpc.BrokerAdminStub(ch)
        r = stub.DeleteTopic(pb.DeleteTopicRequest(topic="T", dry_run=True))
        assert (r.deleted, r.messages, [q.max_offset for q in r.queues]) == (False, 2, [2])
        assert stub.DeleteTopic(pb.DeleteTopicRequest(topic="T")).deleted
        with pytest.raises(grpc.RpcError) as err:
            stub.DeleteTopic(pb.DeleteTopicRequest(topic="T"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_the_client_deletes_per_group_and_says_where_it_could_not(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    send(master, "T", 0, 2)
    slave = nodes.slave(master)
    poll_until(lambda: slave.core.list_topics() == [("T", 1)], 10, "the topic on the slave")
    with Admin(slave.address) as admin:  # a group whose master is not among its live brokers
        out = admin_topics.delete_topic(admin, "T")
    assert not out["ok"] and out["groups"][0]["outcome"] == "failed", out
    assert "no live master" in out["groups"][0]["error"]
    with Admin(master.address) as admin:
        with pytest.raises(InvalidTopicError):  # refused alike everywhere: raised, nothing deleted
            admin_topics.delete_topic(admin, "%SCHEDULE%")
        with pytest.raises(UnknownTopicError):
            admin_topics.delete_topic(admin, "nope")
        dry = admin_topics.delete_topic(admin, "T", dry_run=True)
        assert dry["ok"] and dry["groups"][0]["outcome"] == "would_delete"
        assert master.core.store.topics.queue_count("T") == 1
        out = admin_topics.delete_topic(admin, "T")
    assert out["ok"] and out["routes_dropped"] is None and out["groups"][0]["messages"] == 2, out
    assert master.core.store.topics.queue_count("T") is None


def test_routes_left_name_the_nameserver_and_groups() -> None:
    route = TopicRoute("T", (GroupRoute("g1", "c", 1, 1, "rw"), GroupRoute("g3", "c", 1, 1, "rw")))
    answers = {"ns1:1": None, "ns0:1": route}
    assert admin_topics.routed_to(answers, ["g1", "g2"]) == ["nameserver ns0:1 still routes it to g1"]
    assert admin_topics.routed_to(answers, ["g2"]) == []
