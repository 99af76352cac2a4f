"""Nameserver registry, routes, membership and allocation with a fake clock."""

from __future__ import annotations

import pytest

from core.consumer_groups import ConsumerGroups
from core.errors import InvalidArgumentError
from core.route import MessageQueue, allocate_average
from nameserver.registry import KNOWN_GROUP_MS, BrokerRegistry, Registration, TopicInfo

pytestmark = pytest.mark.unit


def reg(
    name: str, bid: int, addr: str, epoch: int = 0, hb: int = 1000, topics: dict[str, int] | None = None
) -> Registration:
    return Registration(
        cluster="c",
        broker_name=name,
        broker_id=bid,
        address=addr,
        epoch=epoch,
        role="master" if bid == 0 else "slave",
        max_offset=0,
        heartbeat_ms=hb,
        topics={t: TopicInfo(q, q, "rw") for t, q in (topics or {"T": 4}).items()},
    )


def test_broker_silent_for_three_heartbeats_is_dropped() -> None:
    r = BrokerRegistry()
    r.register(reg("a", 0, "h:1", hb=1000), now_ms=0)
    r.register(reg("b", 0, "h:2", hb=1000), now_ms=0)
    r.register(reg("b", 0, "h:2", hb=1000), now_ms=2500)  # b keeps beating
    assert r.expire(now_ms=3000) == []  # a: exactly 3 intervals silent, not yet
    route = r.route("T", now_ms=3000)
    assert route is not None and [g.broker_name for g in route.groups] == ["a", "b"]
    gone = r.expire(now_ms=3001)
    assert [g.address for g in gone] == ["h:1"]
    route = r.route("T", now_ms=3001)
    assert route is not None and [g.broker_name for g in route.groups] == ["b"]
    assert r.route("T", now_ms=10_000) is None  # everyone silent: no route at all


def test_routes_hide_expired_brokers_even_before_expire_runs() -> None:
    r = BrokerRegistry()
    r.register(reg("a", 0, "h:1"), now_ms=0)
    assert r.route("T", now_ms=3001) is None


def test_higher_epoch_wins_between_two_masters() -> None:
    r = BrokerRegistry()
    r.register(reg("a", 0, "old:1", epoch=1), now_ms=0)
    r.register(reg("a", 0, "new:1", epoch=2), now_ms=0)
    r.register(reg("a", 1, "slave:1", epoch=2), now_ms=0)
    route = r.route("T", now_ms=1)
    assert route is not None
    (g,) = route.groups
    assert g.master is not None and g.master.address == "new:1"
    assert sorted(b.address for b in g.brokers) == ["new:1", "slave:1"]
    assert r.register(reg("a", 0, "old:1", epoch=1), now_ms=2) == 2  # told the group's epoch


def test_a_master_back_on_a_new_address_replaces_its_old_entry() -> None:
    r = BrokerRegistry()
    r.register(reg("a", 0, "old:1"), now_ms=0)
    r.register(reg("a", 0, "new:2"), now_ms=10)
    route = r.route("T", now_ms=20)
    assert route is not None and route.groups[0].master.address == "new:2"  # type: ignore[union-attr]
    assert [b.address for b in route.groups[0].brokers] == ["new:2"]


def test_route_queue_counts_and_topics_per_group() -> None:
    r = BrokerRegistry()
    r.register(reg("a", 0, "h:1", topics={"T": 4, "U": 2}), now_ms=0)
    r.register(reg("b", 0, "h:2", topics={"T": 8}), now_ms=0)
    t = r.route("T", 0)
    u = r.route("U", 0)
    assert t is not None and u is not None
    assert len(t.write_queues()) == 12 and [g.broker_name for g in u.groups] == ["a"]
    assert t.write_queues()[0] == MessageQueue("a", 0)
    assert r.clusters(0)["c"][1].broker_name == "b"
    assert r.unregister("h:2") and r.route("T", 0).groups[0].broker_name == "a"  # type: ignore[union-attr]


def test_averaging_allocation() -> None:
    qs = [MessageQueue(g, q) for g in ("a", "b") for q in range(4)]
    members = ["m3", "m1", "m2"]
    shares = {m: allocate_average(qs, members, m) for m in members}
    assert [len(shares[m]) for m in ("m1", "m2", "m3")] == [3, 3, 2]
    everything = [q for m in ("m1", "m2", "m3") for q in shares[m]]
    assert everything == sorted(qs)  # contiguous blocks, each queue exactly once
    assert allocate_average(qs, members, "stranger") == []
    assert allocate_average(qs[:2], members, "m3") == []  # more members than queues
    assert allocate_average(qs, ["solo"], "solo") == sorted(qs)


def test_consumer_membership_expires_by_each_members_interval() -> None:
    g = ConsumerGroups()
    assert g.heartbeat("grp", "T", "fast", 100, now_ms=0) == ["fast"]
    assert g.heartbeat("grp", "T", "slow", 1000, now_ms=0) == ["fast", "slow"]
    assert g.heartbeat("grp", "U", "other", 1000, now_ms=0) == ["other"]  # per topic
    assert g.members("grp", "T", now_ms=300) == ["fast", "slow"]
    assert g.members("grp", "T", now_ms=301) == ["slow"]
    assert g.unregister("grp", "T", "slow", now_ms=302) == []
    assert g.members("grp", "U", now_ms=302) == ["other"]
    with pytest.raises(InvalidArgumentError):
        g.heartbeat("grp", "T", "bad id!", 100, 0)
    with pytest.raises(InvalidArgumentError):
        g.heartbeat("bad group!", "T", "x", 100, 0)
    with pytest.raises(InvalidArgumentError):
        g.heartbeat("grp", "T", "x", 0, 0)


def test_a_group_creates_topics_on_first_send_as_its_master_says() -> None:
    from dataclasses import replace

    r = BrokerRegistry()
    r.register(replace(reg("a", 0, "m:1"), auto_create=True), now_ms=0)
    r.register(reg("a", 1, "s:1"), now_ms=0)  # a slave's own setting does not decide
    r.register(reg("b", 0, "m:2"), now_ms=0)
    r.register(replace(reg("c", 1, "s:3"), auto_create=True), now_ms=0)  # no master: its newest broker
    groups = {g.broker_name: g.auto_create for gs in r.clusters(now_ms=1).values() for g in gs}
    assert groups == {"a": True, "b": False, "c": True}
    route = r.route("T", now_ms=1)
    assert route is not None and [g.auto_create for g in route.groups] == [True, False, True]


def test_route_gaps_name_each_nameserver_and_the_groups_it_lacks() -> None:
    from consumer.admin import route_gaps
    from core.route import BrokerEndpoint, GroupRoute, TopicRoute

    def group(name: str, queues: int, master: bool = True) -> GroupRoute:
        ends = (BrokerEndpoint(0 if master else 1, f"{name}:1", "master", 0, True),)
        return GroupRoute(name, "c", queues, queues, "rw", ends)

    full = TopicRoute("T", (group("a", 4), group("b", 4)))
    assert route_gaps({"ns0": full, "ns1": full}, ["a", "b"], 4) == []
    assert route_gaps({"ns0": full}, ["a", "b"], 8) == ["nameserver ns0 does not route it to a, b"]
    partial = TopicRoute("T", (group("a", 4), group("b", 4, master=False)))
    assert route_gaps({"ns0": full, "ns1": partial, "ns2": None}, ["a", "b"], 4) == [
        "nameserver ns1 does not route it to b",
        "nameserver ns2 has no route to it",
    ]
    assert route_gaps({}, ["a"], 1) == ["no nameserver answered"]


def test_a_producer_sends_an_unrouted_topic_to_a_master_that_creates_it() -> None:
    """The send logic (consumer/send_logic.py) driven by hand: no route for the
    topic, so it asks which masters create topics and sends to one of them."""
    import contextlib
    import itertools

    from consumer.send_logic import AutoCreateLookup, Call, RouteLookup, SendLogic
    from core.errors import BrokerUnavailableError, UnknownTopicError
    from core.pb.tailrace.v1 import broker_pb2 as bpb
    from core.route import BrokerEndpoint, GroupRoute, TopicRoute

    def group(name: str) -> GroupRoute:
        return GroupRoute(name, "c", 0, 0, "rw", (BrokerEndpoint(0, f"{name}:1", "master", 0, True),), True)

    clock = itertools.count(0.0, 0.001)
    logic = SendLogic(None, None, 2, 20.0, 10.0, 5.0, lambda: float(next(clock)))
    no_route = UnknownTopicError("no live broker serves topic 'new'")
    ok = bpb.SendResponse(status=bpb.SEND_OK, topic="new", queue_offsets=[0], physical_offsets=[0])

    def first_call(creating: object) -> object:
        """Drive one send until its first Call (returns its address) or what it does instead."""
        steps = logic.steps("new", [b"x"])
        action = next(steps)
        assert isinstance(action, RouteLookup)
        action = steps.send(no_route)
        assert isinstance(action, AutoCreateLookup)
        action = steps.send(creating)
        if isinstance(action, Call):
            assert action.request.queue_id == -1  # the broker picks the queue of the topic it creates
            with contextlib.suppress(StopIteration):  # stored: the send is over
                steps.send(ok)
            return action.address
        return action

    creating = TopicRoute("new", (group("a"), group("b")))
    assert [first_call(creating) for _ in range(4)] == ["a:1", "b:1", "a:1", "b:1"]  # round robin
    logic.breaker.failed("a:1", 0.0, "refused")  # just failed: avoided for a while
    assert [first_call(creating) for _ in range(2)] == ["b:1", "b:1"]
    nobody = BrokerUnavailableError("no live master is registered")
    assert not isinstance(first_call(nobody), Call)  # nobody registered yet: retried later
    with pytest.raises(UnknownTopicError, match="create it with"):
        first_call(UnknownTopicError("topic 'new' does not exist; create it with `tailrace topic create`"))


def test_a_group_with_no_live_broker_stays_listed_but_not_routed() -> None:
    """Review B4: `clusters()` carried only live groups, so a broker group
    entirely down vanished from describe, list and the console. It stays
    listed (with no brokers) for KNOWN_GROUP_MS; routes still leave it out
    (consumers must not be given queues nobody serves)."""
    r = BrokerRegistry()
    r.register(reg("a", 0, "h:1"), now_ms=0)
    r.register(reg("b", 0, "h:2"), now_ms=0)
    r.register(reg("a", 0, "h:1"), now_ms=5000)  # b's master went silent
    groups = {g.broker_name: g for g in r.clusters(now_ms=5000)["c"]}
    assert sorted(groups) == ["a", "b"]
    assert groups["b"].brokers == () and groups["b"].master is None
    route = r.route("T", now_ms=5000)
    assert route is not None and [g.broker_name for g in route.groups] == ["a"]
    r.register(reg("a", 0, "h:1"), now_ms=KNOWN_GROUP_MS + 1)
    assert [g.broker_name for g in r.clusters(now_ms=KNOWN_GROUP_MS + 1)["c"]] == ["a"]  # forgotten since


def test_group_counts_keep_the_brokers_a_group_should_have() -> None:
    """The alerts compare live brokers with those heard from in the last day
    (review B6): a slave down stays counted as known, live drops."""
    r = BrokerRegistry()
    r.register(reg("a", 0, "h:1"), now_ms=0)
    r.register(reg("a", 1, "h:2"), now_ms=0)
    assert r.group_counts(now_ms=0) == {("c", "a"): (2, 1, 2)}
    r.register(reg("a", 0, "h:1"), now_ms=60_000)  # the slave stopped
    assert r.group_counts(now_ms=60_000) == {("c", "a"): (1, 1, 2)}
    assert r.group_counts(now_ms=KNOWN_GROUP_MS + 70_000) == {}  # the whole group forgotten a day later
