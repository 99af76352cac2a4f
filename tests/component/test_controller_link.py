"""The broker's controller link against several controllers over real gRPC
(in-process servers on port 0, behind the error interceptor): it follows the
leader a standby names, goes round the list on other failures, and a
controller that takes the call but never answers (as if SIGSTOPped) costs
only its share of the beat."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from core.broker.controller_link import ControllerLink
from core.errors import NotControllerError
from core.grpc_server import build_server
from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.pb.tailrace.v1 import broker_pb2_grpc, nameserver_pb2_grpc
from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.roles import Directive
from deploy.waits import poll_until
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


class FakeController(nameserver_pb2_grpc.NameServerServicer):
    """`mode`: "lead" answers the directive, "standby" refuses naming `hint`,
    "stopped" takes the call and never answers (until its deadline)."""

    def __init__(self, mode: str, hint: str = "", lease_ms: int = 4000) -> None:
        self.mode, self.hint, self.lease_ms = mode, hint, lease_ms
        self.calls: list[float] = []  # when each call was refused or answered (monotonic)

    def ControllerHeartbeat(
        self, request: pb.ControllerHeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.ControllerHeartbeatResponse:
        if self.mode == "stopped":
            gone = threading.Event()
            context.add_callback(gone.set)  # the caller's deadline ends the call
            gone.wait(10)
        self.calls.append(time.monotonic())
        if self.mode != "lead":
            raise NotControllerError("standing by", self.hint)
        return pb.ControllerHeartbeatResponse(
            epoch=3, master_id=1, master_address="m:1", in_sync=[1, 2], lease_ms=self.lease_ms
        )


class Broker:
    """The link's broker side: what it reports, what it was told."""

    def __init__(self) -> None:
        self.directives: list[tuple[Directive, float]] = []

    def controller_heartbeat(self) -> tuple[pb.ControllerHeartbeatRequest, int]:
        return pb.ControllerHeartbeatRequest(group="g", node_id=1, role="master", epoch=3), 7

    def on_directive(
        self, d: Directive, sent_at: float, request: pb.ControllerHeartbeatRequest, gen: int
    ) -> None:
        assert gen == 7 and request.node_id == 1
        self.directives.append((d, sent_at))


Start = Callable[[FakeController], str]


@pytest.fixture
def start() -> Iterator[Start]:
    """start(controller) -> its address; every server is stopped at teardown."""
    started: list[grpc.Server] = []

    def _start(ctl: FakeController) -> str:
        server, _ = build_server(4, 16, 1024 * 1024)
        started.append(server)
        nameserver_pb2_grpc.add_NameServerServicer_to_server(ctl, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return f"127.0.0.1:{port}"

    yield _start
    for s in started:
        s.stop(0).wait(5)


@pytest.fixture
def links() -> Iterator[list[ControllerLink]]:
    made: list[ControllerLink] = []
    yield made
    for link in made:
        link.close()


def free_address() -> str:
    """An address nothing listens on (a controller that is down)."""
    server, _ = build_server(1, 1, 1024)
    port = server.add_insecure_port("127.0.0.1:0")
    server.stop(0).wait(5)  # never started: the port is free again
    return f"127.0.0.1:{port}"


def link_to(links: list[ControllerLink], addresses: list[str], heartbeat_ms: int = 1000) -> ControllerLink:
    link = ControllerLink(addresses, heartbeat_ms, Broker())
    links.append(link)
    return link


def directives(link: ControllerLink) -> list[tuple[Directive, float]]:
    assert isinstance(link.broker, Broker)
    return link.broker.directives


def test_a_standby_names_the_leader(
    start: Start, links: list[ControllerLink], caplog: pytest.LogCaptureFixture
) -> None:
    leader = FakeController("lead")
    c = start(leader)
    standby = FakeController("standby", c)
    b = start(standby)
    other = FakeController("standby", c)
    a = start(other)
    link = link_to(links, [b, a, c])
    with caplog.at_level(logging.WARNING, "core.broker.controller_link"):
        assert link.beat()
    assert link.leader == c and link.last_error == "" and other.calls == []  # straight to the one named
    ((d, sent_at),) = directives(link)
    assert d.epoch == 3 and d.in_sync == frozenset({1, 2}) and d.lease_ms == 4000
    assert sent_at >= standby.calls[0]  # the lease counts from the attempt that was answered
    switches = [r for r in caplog.records if "following controller" in r.getMessage()]
    assert len(switches) == 1 and f"naming {c}" in switches[0].getMessage()
    assert link.beat() and len(standby.calls) == 1 and len(leader.calls) == 2  # the leader first now
    assert len([r for r in caplog.records if "following controller" in r.getMessage()]) == 1
    assert link.status() == {"controller": c, "controller_error": ""}


def test_a_stopped_controller_costs_only_its_share(start: Start, links: list[ControllerLink]) -> None:
    """The followed controller takes calls and never answers; a standby knows
    no leader; the third leads. The beat ends within its budget, answered."""
    a = start(FakeController("stopped"))
    b = start(FakeController("standby"))
    c = start(FakeController("lead"))
    link = link_to(links, [a, b, c], heartbeat_ms=600)  # budget 0.6 s, a's share 0.3 s
    t0 = time.monotonic()
    assert link.beat()
    took = time.monotonic() - t0
    assert 0.25 <= took < 0.6 and link.leader == c
    ((_, sent_at),) = directives(link)
    assert sent_at >= t0 + 0.25  # c was asked after a's share ran out, and that is what counts
    t0 = time.monotonic()
    assert link.beat() and time.monotonic() - t0 < 0.25  # c is asked first now


def test_a_hint_outside_the_list_is_not_followed(
    start: Start, links: list[ControllerLink], caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = start(FakeController("lead"))  # a real controller, but not one this broker was given
    a = start(FakeController("standby", elsewhere))
    b = start(FakeController("lead"))
    link = link_to(links, [a, b])
    with caplog.at_level(logging.WARNING, "core.broker.controller_link"):
        assert link.beat() and link.beat()
    assert link.leader == b
    ignored = [r for r in caplog.records if "not in broker.controller" in r.getMessage()]
    assert len(ignored) == 1 and elsewhere in ignored[0].getMessage()


def test_no_controller_answers(start: Start, links: list[ControllerLink]) -> None:
    down = free_address()
    a = start(FakeController("standby"))
    link = link_to(links, [a, down], heartbeat_ms=500)
    assert not link.beat()
    assert link.leader == a and directives(link) == []  # nobody answered: nothing changes
    assert "NOT_CONTROLLER naming no leader" in link.last_error and down in link.last_error
    assert link.status()["controller_error"] == link.last_error


def test_the_loop_follows_a_new_leader(start: Start, links: list[ControllerLink]) -> None:
    """The leader steps down and names its successor: the running loop follows."""
    first = FakeController("lead")
    a = start(first)
    second = FakeController("standby", a)
    b = start(second)
    link = link_to(links, [a, b], heartbeat_ms=50)
    link.start()
    poll_until(lambda: len(directives(link)) >= 2, 10, "heartbeats answered by the first")
    second.mode, first.mode, first.hint = "lead", "standby", b
    poll_until(lambda: link.leader == b, 10, "the link following the second controller")
    n = len(second.calls)
    poll_until(lambda: len(second.calls) >= n + 2, 10, "heartbeats answered by the second")


def test_a_master_no_controller_renews_refuses_sends_and_resumes(start: Start, nodes: Nodes) -> None:
    """A broker given two controllers (a standby first) is made master in
    epoch 3 by the other; when no controller answers for longer than its
    lease (etcd's quorum gone, as far as it can tell), sends get
    MASTER_LEASE_EXPIRED and store nothing, pulls are served; when a
    controller answers again, the same master takes sends again."""
    leader = FakeController("lead", lease_ms=400)  # the broker writes for 300 ms after each renewal
    c = start(leader)
    b = start(FakeController("standby", c))
    node = nodes.start(
        "b1",
        {
            "broker.broker_id": 1,
            "broker.controller": f"{b},{c}",
            "broker.controller_heartbeat_ms": 50,
        },
    )
    channel = grpc.insecure_channel(node.address)
    try:
        stub = broker_pb2_grpc.BrokerStub(channel)

        def send() -> bpb.SendResponse:
            req = bpb.SendBatchRequest(topic="T", queue_id=0, messages=[bpb.Message(body=b"m")])
            return stub.SendBatch(req, timeout=5)

        poll_until(lambda: send().status == bpb.SEND_OK, 10, "the broker leading with a lease")
        failover = node.core.status()["details"]["failover"]
        assert failover["epoch"] == 3 and failover["controller"] == c and failover["controller_error"] == ""

        leader.mode = "standby"  # no controller leads now: nobody renews the lease
        poll_until(lambda: send().status == bpb.MASTER_LEASE_EXPIRED, 10, "the lease lapsed")
        end = node.core.store.commitlog.max_offset
        refused = send()
        assert refused.status == bpb.MASTER_LEASE_EXPIRED and not refused.queue_offsets
        assert "lease" in refused.detail and node.core.store.commitlog.max_offset == end  # nothing stored
        pulled = stub.Pull(bpb.PullRequest(group="G", topic="T", queue_id=0, queue_offset=0, max_messages=32))
        assert pulled.status == bpb.FOUND and pulled.count >= 1  # reads go on
        failover = node.core.status()["details"]["failover"]
        assert failover["leading"] and "NOT_CONTROLLER naming no leader" in failover["controller_error"]

        leader.mode = "lead"  # a controller renews it: the same master, the same epoch, resumes
        poll_until(lambda: send().status == bpb.SEND_OK, 10, "sends taken again")
        assert node.core.epoch == 3 and node.core.promotions == 1
    finally:
        channel.close()
