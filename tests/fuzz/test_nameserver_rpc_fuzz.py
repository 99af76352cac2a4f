"""Fuzzing every RPC a nameserver serves (NameServer and Health) against one
in this process, built as deploy/nameserver_main.py builds it (the security
guard in plaintext on loopback, drills on so that `Isolate` is served, the
failover controller with its state file): random field values and random
bytes. Never INTERNAL, UNKNOWN or a hang; errors as documented; and an
error leaves the registry and the controller's groups as they were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.clock import now_ms
from core.grpc_server import build_server, set_serving
from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.roles import Role
from core.security.config import AuthSection
from core.security.identity import Kind, Member
from core.security.serving import ProcessSecurity
from core.security.tls import TlsSection
from nameserver.controller import Controller, Heartbeat
from nameserver.registry import BrokerRegistry
from nameserver.service import NameServerService
from tests.fuzz.profiles import examples
from tests.fuzz.rpc import Method, Target, methods_of, raw_requests, requests

pytestmark = [pytest.mark.fuzz, pytest.mark.component]

METHODS = [m for module in (pb, health_pb2) for m in methods_of(module)]
GOOD: dict[str, list[Any]] = {
    "cluster": ["DefaultCluster"],
    "broker_name": ["g", "h"],
    "group": ["g", "h"],
    "broker_id": [0, 1, 2],
    "node_id": [1, 2],
    "address": ["127.0.0.1:10911", "127.0.0.1:10912"],
    "member_address": ["", "127.0.0.1:10913"],
    "role": ["master", "slave", "initial-master"],
    "epoch": [0, 1, 2],
    "max_offset": [0, 4096],
    "heartbeat_ms": [1000, 30_000],
    "topic": ["T", "U", "%RETRY%G"],
    "name": ["T", "U"],
    "read_queues": [1, 4],
    "write_queues": [1, 4],
    "perm": ["rw", "r"],
    "in_sync": [1, 2],
    "priority": [0, 1],
    "duration_ms": [0, 100],
    "service": ["", "tailrace.v1.NameServer", "nope"],
}


def stored(registry: BrokerRegistry, controller: Controller) -> tuple[Any, ...]:
    """The registry's entries and the controller's groups (not the times
    they were last heard from: only an accepted call renews those)."""
    brokers = tuple(
        (a, r.cluster, r.broker_name, r.broker_id, r.node_id, r.epoch, r.role, r.max_offset, r.heartbeat_ms,
         tuple(sorted(r.topics.items())), r.auto_create)
        for a, r in sorted(registry._brokers.items())
    )  # fmt: skip
    groups = tuple(
        (n, g.epoch, g.master_id, g.master_address, tuple(sorted(g.in_sync)), tuple(sorted(g.members)))
        for n, g in sorted(controller._groups.items())
    )
    return brokers, groups


@pytest.fixture(scope="module")
def nameserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = Path(tmp_path_factory.mktemp("nameserver"))
    registry = BrokerRegistry()
    controller = Controller(data, lease_ms=60_000)
    security = ProcessSecurity(
        Member("DefaultCluster", Kind.NAMESERVER, "ns"),
        TlsSection(),
        AuthSection(),
        insecure=False,
        drills=True,
    )
    server, health = build_server(8, 64, 4 << 20, [security.guard])
    nameserver_pb2_grpc.add_NameServerServicer_to_server(
        NameServerService(registry, controller=controller), server
    )
    port, _ = security.listen(server, "127.0.0.1:0", "127.0.0.1:0", "nameserver.listen")
    server.start()
    set_serving(health, True, "tailrace.v1.NameServer")
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    try:
        # a group with a master the controller elected, registered with a topic
        controller.heartbeat(
            Heartbeat("g", "DefaultCluster", 1, "127.0.0.1:10911", 0, Role.MASTER, 0), now_ms()
        )
        register = channel.unary_unary(
            "/tailrace.v1.NameServer/RegisterBroker", lambda m: m.SerializeToString()
        )
        topic = pb.TopicConfig(name="T", read_queues=4, write_queues=4, perm="rw")
        broker = pb.BrokerRegistration(
            cluster="DefaultCluster", broker_name="g", broker_id=0, node_id=1, address="127.0.0.1:10911",
            epoch=1, role="master", heartbeat_ms=60_000, topics=[topic],
        )  # fmt: skip
        register(pb.RegisterBrokerRequest(broker=broker), timeout=10)
        yield Target(
            channel,
            lambda: stored(registry, controller),
            plain={
                "Check": frozenset({grpc.StatusCode.NOT_FOUND}),
                "List": frozenset({grpc.StatusCode.UNIMPLEMENTED}),
            },
        )
    finally:
        channel.close()
        server.stop(0).wait()


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_random_field_values(nameserver: Target, method: Method, data: st.DataObject) -> None:
    nameserver.exercise(method, data.draw(requests(method, GOOD), label="request"), raw=False)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=examples(0.25))
@given(data=st.data())
def test_random_bytes(nameserver: Target, method: Method, data: st.DataObject) -> None:
    nameserver.exercise(method, data.draw(raw_requests(method), label="raw request"), raw=True)


# ---- defects this found, pinned ---------------------------------------------------

BY_NAME = {m.name: m for m in METHODS}
MEGABYTE = "T" * (1 << 20)


@settings(max_examples=examples(0.1))
@given(topic=st.text(max_size=200))
@example(topic=MEGABYTE)  # was echoed whole: a status detail over gRPC's metadata limit
def test_an_unknown_topic_is_named_briefly(nameserver: Target, topic: str) -> None:
    nameserver.exercise(BY_NAME["GetRoute"], pb.GetRouteRequest(topic=topic), raw=False)


@settings(max_examples=examples(0.1))
@given(role=st.text(max_size=200))
@example(role=MEGABYTE)  # was echoed whole, as above
def test_an_unknown_role_is_named_briefly(nameserver: Target, role: str) -> None:
    request = pb.ControllerHeartbeatRequest(
        cluster="DefaultCluster", group="g", node_id=2, address="127.0.0.1:2", role=role
    )
    nameserver.exercise(BY_NAME["ControllerHeartbeat"], request, raw=False)


@settings(max_examples=examples(0.1))
@given(name=st.text(max_size=200), address=st.sampled_from(["127.0.0.1:10911", "127.0.0.1:1"]))
@example(name=MEGABYTE, address="127.0.0.1:10911")  # another's address: was echoed whole, as above
@example(name=MEGABYTE, address="127.0.0.1:1")  # a master claim the controller did not make: the same
def test_a_refused_registration_names_the_broker_briefly(nameserver: Target, name: str, address: str) -> None:
    broker = pb.BrokerRegistration(
        broker_name=name, broker_id=0, node_id=1, address=address, heartbeat_ms=1000
    )
    nameserver.exercise(BY_NAME["RegisterBroker"], pb.RegisterBrokerRequest(broker=broker), raw=False)
