"""Fuzzing every RPC a broker serves (Broker, Replication, Health) against a
master in this process (tests/helpers/nodes.py): requests of random field
values, and random bytes as the raw request. Never INTERNAL, UNKNOWN or a
hang; an error is the status core/grpc_status.py documents for its code;
and an error (or a send answered NOT_MASTER) leaves the stored state as it
was: the log's end, the topics, the consumer offsets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import replication_pb2
from core.pb.tailrace.v1 import replication_pb2 as rpb
from core.record import Message
from deploy.broker_node import BrokerNode
from deploy.waits import poll_until
from tests.fuzz.profiles import examples
from tests.fuzz.rpc import (
    Method,
    Target,
    call,
    check_error,
    messages,
    methods_of,
    mostly,
    raw_requests,
    requests,
)
from tests.helpers.nodes import SECRET, Nodes

pytestmark = [pytest.mark.fuzz, pytest.mark.component]

METHODS = [m for module in (pb, replication_pb2, health_pb2) for m in methods_of(module)]
TOPICS = {"T": 4, "U": 1}
GOOD: dict[str, list[Any]] = {
    "topic": ["T", "U", "V", "%RETRY%G", "%DLQ%G", "%SCHEDULER%"],
    "group": ["G", "H", "g", "%SCHEDULER%"],  # consumer groups; "g": the broker group of a handshake
    "client_id": ["c1", "c2"],
    "subscription": ["*", "a || b", "a"],
    "tag_expression": ["", "*", "a || b", "a"],
    "tags": ["a", "b"],
    "keys": ["k"],
    "queue_id": [0, 1, 3],
    "queues": [1, 4, 8],
    "offset": [0, 1, 5],
    "queue_offset": [0, 1, 5],
    "max_messages": [1, 32],
    "max_bytes": [1024, 1 << 20],
    "max_wait_ms": [0, 50],
    "heartbeat_ms": [1000, 30_000],
    "lease_ms": [1000, 60_000],
    "max_reconsume": [0, 1, 3, 16],
    "cluster": ["DefaultCluster"],
    "secret": [SECRET],
    "broker_id": [1, 2],
    "service": ["", "tailrace.v1.Broker", "nope"],
}
# where a field name means something else: the handshake's group is the broker group
# and a new slave starts at 0 in epoch 0 (the master's)
GOOD_FOR = {"Replicate": {**GOOD, "group": ["g"], "max_offset": [0], "epoch": [0], "start_offset": [0]}}


def handshake_first(good: dict[str, list[Any]]) -> st.SearchStrategy[list[Any]]:
    """A replication stream as a slave opens it: a handshake, then acks (the
    generic lists open with a handshake one time in three)."""
    hello = messages(rpb.ReplicaHandshake.DESCRIPTOR, good).map(lambda h: rpb.ReplicateRequest(handshake=h))
    acks = st.lists(
        messages(rpb.ReplicaAck.DESCRIPTOR, good).map(lambda a: rpb.ReplicateRequest(ack=a)), max_size=2
    )
    return st.tuples(hello, acks).map(lambda p: [p[0], *p[1]])


def request_strategy(method: Method) -> st.SearchStrategy[Any]:
    good = GOOD_FOR.get(method.name, GOOD)
    if method.name == "Replicate":
        return mostly(handshake_first(good), requests(method, good))
    return requests(method, good)


def stored(node: BrokerNode) -> tuple[Any, ...]:
    store = node.core.store
    topics = tuple((t, store.topics.queue_count(t)) for t in store.topics.names())
    return store.commitlog.max_offset, topics, tuple(sorted(node.core.offsets._offsets.items()))


def send_refusal(answer: bytes) -> str | None:
    status = pb.SendResponse.FromString(answer).status
    return None if status == pb.SEND_OK else pb.SendStatus.Name(status)


SETTINGS = {
    "pull.max_wait_ms": 200,
    "broker.retry_delays": "24h",
    # the pop revive pass writes nothing either: a group's commit is due in a
    # day, and a message dead-letters after 1000 deliveries (a run pops fewer)
    "broker.pop_commit_interval_ms": 24 * 3600 * 1000,
    "broker.pop_max_attempts": 1000,
    "broker.default_queues": 4,
    "store.cq_entries_per_file": 1024,
    "quotas.max_topics": 300,
}
# grpc-health's own answers: an unknown service; List is not in the installed version
HEALTH_PLAIN = {
    "Check": frozenset({grpc.StatusCode.NOT_FOUND}),
    "List": frozenset({grpc.StatusCode.UNIMPLEMENTED}),
}


def target(node: BrokerNode) -> Target:
    channel = grpc.insecure_channel(node.address, options=[("grpc.max_receive_message_length", 64 << 20)])
    refusals = {"Send": send_refusal, "SendBatch": send_refusal}
    return Target(channel, lambda: stored(node), plain=HEALTH_PLAIN, refusals=refusals)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerNode, BrokerNode]]:
    """A master with two topics, messages and a committed offset, and its
    slave. Held pulls are capped at 200 ms, and retries and the pop revive
    pass's writes are due in a day, so nothing but the calls under test
    changes their state."""
    nodes = Nodes(Path(tmp_path_factory.mktemp("broker-rpc")))
    try:
        master = nodes.master(SETTINGS)
        for topic, queues in TOPICS.items():
            master.core.leader().create_topic(topic, queues)
        master.core.leader().send("T", 0, [Message("", 0, b"x", tags="a")] * 5)
        master.core.leader().commit_offset("G", "T", 0, 1)
        yield master, nodes.slave(master, 1, SETTINGS)
    finally:
        nodes.stop_all()


@pytest.fixture(scope="module")
def broker(group: tuple[BrokerNode, BrokerNode]) -> Iterator[Target]:
    t = target(group[0])
    yield t
    t.channel.close()


@pytest.fixture(scope="module")
def follower(group: tuple[BrokerNode, BrokerNode]) -> Iterator[Target]:
    t = target(group[1])
    yield t
    t.channel.close()


def caught_up(group: tuple[BrokerNode, BrokerNode]) -> None:
    """The slave has all the master has: its state now changes only by the call under test."""
    master, slave = group
    end = master.core.store.commitlog.max_offset
    poll_until(lambda: slave.core.store.commitlog.max_offset == end, 10, "the slave caught up")


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_random_field_values(broker: Target, method: Method, data: st.DataObject) -> None:
    broker.exercise(method, data.draw(request_strategy(method), label="request"), raw=False)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=examples(0.25))
@given(data=st.data())
def test_random_bytes(broker: Target, method: Method, data: st.DataObject) -> None:
    broker.exercise(method, data.draw(raw_requests(method), label="raw request"), raw=True)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=examples(0.25))
@given(data=st.data())
def test_a_follower_with_random_field_values(
    group: tuple[BrokerNode, BrokerNode], follower: Target, method: Method, data: st.DataObject
) -> None:
    """The same on the slave: writes refused NOT_MASTER, reads served, the
    replicated state untouched by either."""
    caught_up(group)
    follower.exercise(method, data.draw(request_strategy(method), label="request"), raw=False)


# ---- defects this found, pinned ---------------------------------------------------

BY_NAME = {m.name: m for m in METHODS}
MEGABYTE = "g" * (1 << 20)


@settings(max_examples=examples(0.1))
@given(raw=st.binary(max_size=20))
@example(
    raw=b"\x00"
)  # was INTERNAL ("Exception deserializing request!"): health was not behind the interceptor
def test_a_health_request_that_does_not_decode_is_invalid(broker: Target, raw: bytes) -> None:
    for name in ("Check", "Watch", "List"):
        broker.exercise(BY_NAME[name], raw, raw=True)


@settings(max_examples=examples(0.1))
@given(client_id=st.text(max_size=300))
@example(client_id=MEGABYTE)  # was a 1 MiB status detail: over gRPC's metadata limit, the client saw none
def test_a_refused_heartbeat_names_its_client_briefly(broker: Target, client_id: str) -> None:
    request = pb.HeartbeatRequest(group="G", topic="T", client_id=client_id, heartbeat_ms=1000)
    broker.exercise(BY_NAME["Heartbeat"], request, raw=False)


@settings(max_examples=examples(0.1))
@given(cluster=st.sampled_from(["DefaultCluster", "other"]), max_offset=st.integers(0, 1 << 20))
@example(cluster=MEGABYTE, max_offset=0)  # was echoed whole, as above
@example(
    cluster="DefaultCluster", max_offset=17
)  # mid-record: was DATA_LOSS, as if the master's log were bad
def test_a_bad_handshake_is_a_replication_error(broker: Target, cluster: str, max_offset: int) -> None:
    hello = rpb.ReplicaHandshake(
        cluster=cluster, group="g", broker_id=1, secret=SECRET, max_offset=max_offset
    )
    answers, err = call(
        broker.channel, BY_NAME["Replicate"].path, [rpb.ReplicateRequest(handshake=hello)], "stream_stream"
    )
    if err is not None:
        assert check_error(err) == "REPLICATION"
    else:
        assert answers and cluster == "DefaultCluster"
