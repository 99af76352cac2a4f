"""Delayed messages end to end, in-process brokers over gRPC: our client's
`deliver_at_ms` reaches the master's timer; the message is acknowledged once
on the sync slave, and stored in its topic not before its time (its record's
store time says so); a promoted slave delivers what the old master had not,
and nothing it had; a clean restart delivers nothing twice."""

from __future__ import annotations

import time

import pytest

from consumer.admin import Admin
from consumer.producer import Producer
from core.errors import InvalidArgumentError
from core.record import Record, iter_records
from core.timer import DELIVER_MS, TIMER_TOPIC, WAIT_QUEUE
from deploy.broker_node import BrokerNode
from deploy.waits import holds_for, poll_until
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def wall() -> int:
    return int(time.time() * 1000)


def records(node: BrokerNode, topic: str = "orders") -> list[Record]:
    store = node.core.store
    if store.topics.queue_count(topic) is None:
        return []
    return list(iter_records(store.read(topic, 0, 0, 1000, 1 << 20).data, verify=True))


def bodies(node: BrokerNode, topic: str = "orders") -> list[bytes]:
    return [r.body for r in records(node, topic)]


def test_a_delayed_send_is_acknowledged_on_the_slave_and_stored_not_before_its_time(nodes: Nodes) -> None:
    sync = {"replication.mode": "sync", "replication.sync_timeout_ms": 5000}
    master = nodes.master(sync)
    slave = nodes.slave(master, overrides=sync)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    at = wall() + 1500
    with Producer(master.address) as prod:
        r = prod.send("orders", b"later", keys="k", properties={"p": "1"}, deliver_at_ms=at)
        assert (r.topic, r.queue_id) == ("orders", 0)
        assert bodies(slave, TIMER_TOPIC) == [b"later"]  # acknowledged once the slave has it
        prod.send("orders", b"now")
        with pytest.raises(InvalidArgumentError, match="max_delay_ms"):
            prod.send("orders", b"too far", deliver_at_ms=wall() + 4 * 86_400_000)
    holds_for(lambda: bodies(master) == [b"now"], max(0.0, (at - wall() - 100) / 1000), "not before its time")
    poll_until(lambda: bodies(master) == [b"now", b"later"], 10, "the delayed message in its topic")
    rec = records(master)[1]
    assert rec.store_ms >= at and rec.properties == {"p": "1", DELIVER_MS: str(at)} and rec.keys == "k"
    poll_until(lambda: bodies(slave) == [b"now", b"later"], 10, "the slave has it too")
    assert len(bodies(master, TIMER_TOPIC)) == 1  # the too-far one stored nothing


def test_a_promoted_slave_delivers_what_the_old_master_had_not(nodes: Nodes) -> None:
    master = nodes.master()
    slave = nodes.slave(master)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    now = wall()
    with Producer(master.address) as prod:
        prod.send("orders", b"early", deliver_at_ms=now + 200)
        prod.send("orders", b"late", deliver_at_ms=now + 2500)
    poll_until(lambda: bodies(master) == [b"early"], 10, "the old master delivered the first")
    end = master.core.store.commitlog.max_offset
    poll_until(lambda: slave.core.store.commitlog.max_offset >= end, 10, "the slave caught up")
    master.stop()
    nodes.started.remove(master)
    assert wall() < now + 2500, "too slow a machine: the old master may have delivered both"
    slave.core.promote(1)
    poll_until(lambda: bodies(slave) == [b"early", b"late"], 15, "the promoted slave delivered the second")
    assert records(slave)[1].store_ms >= now + 2500
    holds_for(lambda: bodies(slave) == [b"early", b"late"], 0.5, "nothing delivered twice")


def test_a_clean_restart_delivers_nothing_twice(nodes: Nodes) -> None:
    master = nodes.master()
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    now = wall()
    with Producer(master.address) as prod:
        prod.send("orders", b"soon", deliver_at_ms=now + 100)
        prod.send("orders", b"tomorrow", deliver_at_ms=now + 86_400_000)
    poll_until(lambda: bodies(master) == [b"soon"], 10, "the first delivered")
    master.stop()
    nodes.started.remove(master)
    again = nodes.master()
    registry = again.core.metrics.registry
    poll_until(
        lambda: registry.get_sample_value("tailrace_timer_pending") == 1, 10, "the timer rebuilt: one pending"
    )
    holds_for(lambda: bodies(again) == [b"soon"], 0.5, "nothing delivered twice")
    assert (
        len(bodies(again, TIMER_TOPIC)) == 2
        and again.core.store.queue_offsets(TIMER_TOPIC, WAIT_QUEUE)[1] == 2
    )
