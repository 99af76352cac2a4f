"""Which role serves which RPC (core/access.py), checked through real gRPC:
a master and its slave in this process, each on its own port 0.

Every method of every service must be classified; a follower answers every
leader-only request with NOT_MASTER naming the master and changes nothing;
the same requests do change the leader (so the samples are real attacks,
not requests refused for some other reason)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from core.access import RPC_ACCESS, LeaderGuard, Serves
from core.grpc_server import build_server
from core.grpc_status import ERROR_CODE_KEY, MASTER_ADDRESS_KEY
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc, nameserver_pb2, replication_pb2
from core.pb.tailrace.v1 import replication_pb2 as rpb
from core.pb.tailrace.v1 import replication_pb2_grpc as rgrpc
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until
from tests.helpers.nodes import SECRET, Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture

SERVICES = (pb, nameserver_pb2, replication_pb2, health_pb2)
MSG = pb.Message(body=b"x" * 100)


def handshake(broker_id: int = 2, secret: str = SECRET) -> rpb.ReplicateRequest:
    return rpb.ReplicateRequest(
        handshake=rpb.ReplicaHandshake(
            cluster="DefaultCluster", group="g", broker_id=broker_id, secret=secret
        )
    )


# One request per leader-only method: what a client (or an attacker) sends.
UNARY_SAMPLES: dict[str, Any] = {
    "Send": pb.SendRequest(topic="T", queue_id=0, message=MSG),
    "SendBatch": pb.SendBatchRequest(topic="T", queue_id=1, messages=[MSG, MSG]),
    "CreateTopic": pb.CreateTopicRequest(topic="N", queues=4),
    "CommitOffset": pb.CommitOffsetRequest(group="G", topic="T", queue_id=0, offset=1),
    "SendBack": pb.SendBackRequest(group="G", topic="T", message=MSG, max_reconsume=3),
    "LockQueues": pb.LockQueuesRequest(group="G", topic="T", client_id="c1", queue_ids=[0], lease_ms=10_000),
    "UnlockQueues": pb.LockQueuesRequest(group="G", topic="T", client_id="c1", queue_ids=[0]),
    "Pop": pb.PopRequest(group="G", topic="T", queue_id=1, max_messages=1, invisible_ms=10_000),
    "AckPop": pb.AckPopRequest(group="G", topic="T", receipt_handles=["forged"]),
    "ChangeInvisible": pb.ChangeInvisibleRequest(group="G", topic="T", receipt_handle="forged"),
    "PopDeadLetter": pb.PopDeadLetterRequest(group="G", topic="T", receipt_handle="forged"),
    "EndTransaction": pb.EndTransactionRequest(topic="T", transaction_id="forged", resolution=pb.COMMIT),
    "PollOrphanTransactions": pb.PollOrphanTransactionsRequest(max_count=1),
    "ResetOffset": pb.ResetOffsetRequest(group="G", topic="T", target=pb.RESET_EARLIEST),
    "DeleteTopic": pb.DeleteTopicRequest(topic="T", dry_run=True),
}
ADMIN = {"ResetOffset", "DeleteTopic"}  # tailrace.v1.BrokerAdmin's
STREAM_SAMPLES: dict[str, Callable[[], Iterator[rpb.ReplicateRequest]]] = {
    "Replicate": lambda: iter([handshake()]),
}


def all_methods() -> list[str]:
    return [
        f"/{service.full_name}/{m.name}"
        for module in SERVICES
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    ]


def test_every_rpc_of_every_service_is_classified() -> None:
    methods = all_methods()
    assert len(methods) > 20
    missing = [m for m in methods if m not in RPC_ACCESS]
    stale = [m for m in RPC_ACCESS if m not in methods]
    assert missing == [], "classify every new RPC in core/access.py"
    assert stale == []
    leader_only = {m.rsplit("/", 1)[1] for m in methods if RPC_ACCESS[m].serves is Serves.LEADER}
    assert leader_only == set(UNARY_SAMPLES) | set(STREAM_SAMPLES), "give each leader-only RPC a sample"


def state(node: BrokerNode) -> tuple[Any, ...]:
    core = node.core
    return (
        core.store.commitlog.max_offset,
        core.list_topics(),
        dict(core.offsets._offsets),
        core.epoch,
        core.role.name,
    )


def call(node: BrokerNode, name: str) -> Any:
    with grpc.insecure_channel(node.address) as ch:
        if name in STREAM_SAMPLES:
            responses = rgrpc.ReplicationStub(ch).Replicate(STREAM_SAMPLES[name](), timeout=5)
            return next(iter(responses))
        stub = broker_pb2_grpc.BrokerAdminStub(ch) if name in ADMIN else broker_pb2_grpc.BrokerStub(ch)
        return getattr(stub, name)(UNARY_SAMPLES[name], timeout=5)


def error_code(exc: grpc.RpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY, "")  # type: ignore[attr-defined]


def test_a_follower_refuses_every_leader_only_rpc_and_changes_nothing(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 4)
    master.core.leader().commit_offset("G", "T", 0, 0)
    slave = nodes.slave(master)
    poll_until(lambda: state(slave)[:3] == state(master)[:3], 10, "the slave caught up")
    before_slave, before_master = state(slave), state(master)
    # every handler of a leader-only RPC asks the core for the leader first: a
    # call that got past the guard would show up here (the guard is what refuses)
    reached: list[str] = []

    def handler_reached() -> object:
        reached.append("leader()")
        raise AssertionError("a leader-only handler ran on a follower")

    slave.core.leader = handler_reached  # type: ignore[method-assign]
    for name in [*UNARY_SAMPLES, *STREAM_SAMPLES]:
        if name in ("Send", "SendBatch"):  # a send's refusal is a status, as a demoted master's
            resp = call(slave, name)
            assert resp.status == pb.NOT_MASTER, name
            assert resp.master_address == master.address and not resp.queue_offsets
            continue
        with pytest.raises(grpc.RpcError) as info:
            call(slave, name)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
        assert error_code(info.value) == "NOT_MASTER", name
        assert master.address in str(info.value.details()), name
        md = dict(info.value.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert md[MASTER_ADDRESS_KEY] == master.address, name  # for clients to follow
    assert reached == [], "the guard let leader-only calls through to their handlers"
    assert state(slave) == before_slave
    assert state(master) == before_master  # nothing was forwarded either


def test_the_same_requests_change_the_leader(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 4)
    end = master.core.store.commitlog.max_offset
    assert call(master, "Send").status == pb.SEND_OK
    assert list(call(master, "SendBatch").queue_offsets) == [0, 1]
    assert call(master, "CreateTopic").created
    call(master, "CommitOffset")
    assert master.core.offsets.query("G", "T", 0) == 1
    assert call(master, "ResetOffset").applied
    assert master.core.offsets.query("G", "T", 0) == 0
    assert call(master, "SendBack").destination == "%SCHEDULE%"
    assert list(call(master, "LockQueues").locked) == [0]
    call(master, "UnlockQueues")
    (popped,) = call(master, "Pop").messages
    assert popped.attempt == 1 and master.core.pops.inflight("G") == 1
    with pytest.raises(grpc.RpcError) as info:  # G pops from T now: a live pop consumer
        call(master, "ResetOffset")
    assert error_code(info.value) == "GROUP_ACTIVE" and master.core.pops.inflight("G") == 1
    with grpc.insecure_channel(master.address) as ch:  # forced, it moves the pop cursor too
        forced = pb.ResetOffsetRequest(group="G", topic="T", target=pb.RESET_EARLIEST, force=True)
        assert broker_pb2_grpc.BrokerAdminStub(ch).ResetOffset(forced, timeout=5).applied
    assert master.core.pops.inflight("G") == 0
    assert [r.error_code for r in call(master, "AckPop").results] == ["INVALID_RECEIPT_HANDLE"]
    for name in ("ChangeInvisible", "PopDeadLetter"):
        with pytest.raises(grpc.RpcError) as info:
            call(master, name)
        assert error_code(info.value) == "INVALID_RECEIPT_HANDLE", name
    assert call(master, "Replicate").WhichOneof("kind") == "handshake_reply"
    assert master.core.store.commitlog.max_offset > end


def test_an_unclassified_rpc_is_refused() -> None:
    server, _ = build_server(4, 8, 1 << 20, [LeaderGuard(lambda: True, lambda m: None)])
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"done")
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("tailrace.v1.New", {"Call": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/tailrace.v1.New/Call")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        server.stop(0)


def test_streaming_errors_carry_their_code(nodes: Nodes) -> None:
    master = nodes.master()
    with grpc.insecure_channel(master.address) as ch:
        stub = rgrpc.ReplicationStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stub.Replicate(iter([handshake(secret="wrong")]), timeout=5)))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_code(info.value) == "REPLICATION_DENIED"
        ack = rpb.ReplicateRequest(ack=rpb.ReplicaAck(max_offset=0))
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stub.Replicate(iter([ack]), timeout=5)))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_code(info.value) == "REPLICATION"
        raw = ch.stream_stream("/tailrace.v1.Replication/Replicate")
        with pytest.raises(grpc.RpcError) as info:
            next(iter(raw(iter([b"\xff\xff\xff"]), timeout=5)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_pull_says_whether_it_was_held(nodes: Nodes) -> None:
    master = nodes.master({"pull.max_held_pulls": 1})
    master.core.leader().create_topic("T", 1)
    slave = nodes.slave(master)
    poll_until(lambda: slave.core.list_topics() == [("T", 1)], 10, "the topic on the slave")
    req = pb.PullRequest(group="G", topic="T", queue_id=0, queue_offset=0, max_wait_ms=100)
    with grpc.insecure_channel(master.address) as m, grpc.insecure_channel(slave.address) as s:
        pull_m, pull_s = broker_pb2_grpc.BrokerStub(m).Pull, broker_pb2_grpc.BrokerStub(s).Pull
        r = pull_m(req, timeout=5)
        assert (r.status, r.held) == (pb.NO_NEW_MSG, True)
        r = pull_m(pb.PullRequest(group="G", topic="T", queue_id=0, queue_offset=0), timeout=5)
        assert (r.status, r.held) == (pb.NO_NEW_MSG, False)  # it did not ask to wait
        r = pull_s(req, timeout=5)
        assert (r.status, r.held) == (pb.NO_NEW_MSG, False)  # a slave never holds
        # the one hold slot taken: the next pull is answered at once, and says so
        held = pull_m.future(
            pb.PullRequest(group="G", topic="T", queue_id=0, queue_offset=0, max_wait_ms=3000)
        )
        poll_until(lambda: master.core.notifier.waiting(("T", 0)) == 1, 5, "a held pull")
        r = pull_m(req, timeout=5)
        assert (r.status, r.held) == (pb.NO_NEW_MSG, False)
        held.cancel()
