"""The master's timer on a real store: a delayed send is parked in `%TIMER%`
and stored in its topic once due, never before; its progress survives a
clean restart (no redelivery) and a crash redelivers (at least once); one
bad message is skipped and the rest go on; the cap and the delay limit
refuse, storing nothing; rolls and snapshots keep the rebuild bounded by
what is pending. One leader role on a store in a temp dir, its timer driven
by hand (`run_once(now)`), time passed in."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.errors import BrokerBusyError, InvalidArgumentError
from core.record import Message, Record, iter_records
from core.retry import REAL_TOPIC
from core.roles import SendStatus
from core.store import StoreConfig
from core.timer import (
    COMMIT_MS,
    DELIVER_MS,
    PROGRESS_QUEUE,
    REAL_QID,
    ROLL_RATIO,
    TIMER_GROUP,
    TIMER_QUEUES,
    TIMER_TOPIC,
    WAIT_QUEUE,
)
from deploy.waits import poll_until
from master.timer import Timer
from tests.helpers.leader_core import LeaderBroker, close_core, open_core

pytestmark = pytest.mark.unit


@dataclass
class Broker(LeaderBroker):
    @property
    def timer(self) -> Timer:
        return self.leader.timer

    def send(self, at: int, body: bytes = b"m", topic: str = "orders", queue: int = 0, **kw: Any) -> Any:
        return self.leader.send(topic, queue, [Message(topic, queue, body, deliver_at_ms=at, **kw)])

    def records(self, topic: str, queue: int = 0) -> list[Record]:
        store = self.core.store
        if store.topics.queue_count(topic) is None:
            return []
        return list(iter_records(store.read(topic, queue, 0, 10_000, 64 << 20).data, verify=True))

    def bodies(self, topic: str = "orders", queue: int = 0) -> list[bytes]:
        return [r.body for r in self.records(topic, queue)]

    def metric(self, name: str) -> float:
        return self.core.metrics.registry.get_sample_value(name) or 0.0


def open_broker(directory: Path, config: StoreConfig, **overrides: Any) -> Broker:
    core = open_core(directory, config, **overrides)  # the timer thread is never started
    core.leader().create_topic("orders", 2)
    return Broker(core)


def close(b: Broker) -> None:
    close_core(b.core)


@pytest.fixture
def broker(tmp_path: Path, small_config: StoreConfig) -> Iterator[Broker]:
    b = open_broker(tmp_path, small_config)
    try:
        yield b
    finally:
        close(b)


def wall() -> int:
    return int(time.time() * 1000)


def test_a_delayed_message_waits_in_the_timer_and_comes_out_as_sent(broker: Broker) -> None:
    at = wall() + 60_000
    out = broker.send(at, b"later", queue=1, tags="t1", keys="k1 k2", properties={"p": "v"}, born_ms=123)
    assert out.status is SendStatus.SEND_OK and (out.topic, out.queue_id) == ("orders", 1)
    assert broker.bodies("orders", 1) == [] and broker.bodies(TIMER_TOPIC) == [b"later"]
    assert broker.send(0, b"now", queue=1).status is SendStatus.SEND_OK  # no time: stored at once
    assert broker.timer.run_once(at - 1) == 0
    assert broker.bodies("orders", 1) == [b"now"]
    assert broker.timer.run_once(at) == 1
    rec = broker.records("orders", 1)[1]
    assert (rec.body, rec.tags, rec.keys, rec.born_ms) == (b"later", "t1", "k1 k2", 123)
    assert rec.properties == {"p": "v", DELIVER_MS: str(at)}  # REAL_TOPIC, REAL_QID gone
    assert broker.timer.run_once(at + 60_000) == 0  # once
    assert broker.metric("tailrace_timer_pending") == 0


def test_a_time_in_the_past_or_now_is_stored_at_once(broker: Broker) -> None:
    broker.send(wall() - 5_000, b"past")
    assert broker.bodies() == [b"past"] and broker.core.store.topics.queue_count(TIMER_TOPIC) is None


def test_a_batch_with_one_later_message_waits_whole_and_each_comes_at_its_time(broker: Broker) -> None:
    now = wall()
    msgs = [
        Message("orders", 0, b"a", deliver_at_ms=0),
        Message("orders", 0, b"b", deliver_at_ms=now + 50_000),
    ]
    broker.leader.send("orders", 0, msgs)
    assert broker.bodies() == []
    broker.timer.run_once(now + 1_000)
    assert broker.bodies() == [b"a"]
    broker.timer.run_once(now + 50_000)
    assert broker.bodies() == [b"a", b"b"]


def test_past_the_longest_delay_the_send_is_refused_and_nothing_stored(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    b = open_broker(tmp_path, small_config, broker__max_delay_ms=10_000)
    try:
        with pytest.raises(InvalidArgumentError, match="max_delay_ms"):
            b.send(wall() + 60_000)
        assert b.bodies() == [] and b.core.store.topics.queue_count(TIMER_TOPIC) is None
    finally:
        close(b)


def test_past_the_cap_sends_are_refused_retriably_until_the_timer_drains(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    b = open_broker(tmp_path, small_config, broker__timer_max_pending=2)
    try:
        at = wall() + 30_000
        b.send(at)
        b.timer.run_once(at - 1)  # the first pass rebuilds: from then on the cap counts
        b.send(at)
        with pytest.raises(BrokerBusyError, match="timer_max_pending"):
            b.send(at, b"third")
        assert len(b.bodies(TIMER_TOPIC)) == 2
        b.timer.run_once(at)
        b.send(at + 1, b"third")  # room again
        assert len(b.bodies(TIMER_TOPIC)) == 3
    finally:
        close(b)


def test_a_clean_restart_delivers_nothing_twice_and_what_waits_still_comes(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    b = open_broker(tmp_path, small_config)
    now = wall()
    for i in range(5):
        b.send(now + 1_000 * (i + 1), b"m%d" % i)
    b.timer.run_once(now + 3_000)
    assert b.bodies() == [b"m0", b"m1", b"m2"]
    close(b)
    b = open_broker(tmp_path, small_config)
    try:
        b.timer.run_once(now + 3_000)
        assert b.bodies() == [b"m0", b"m1", b"m2"]
        b.timer.run_once(now + 10_000)
        assert b.bodies() == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    finally:
        close(b)


def test_a_crash_before_the_progress_is_written_delivers_again(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    b = open_broker(tmp_path, small_config)
    now = wall()
    b.send(now + 1_000, b"once-or-more")
    t = b.timer
    (
        t._rebuild(),
        t._load(),
        t._deliver(now + 1_000, now + 1_000),
    )  # a pass that stops before its progress record
    assert b.bodies() == [b"once-or-more"]
    close(b)
    b = open_broker(tmp_path, small_config)
    try:
        b.timer.run_once(now + 1_000)
        assert b.bodies() == [b"once-or-more", b"once-or-more"]  # at least once
    finally:
        close(b)


def park(b: Broker, body: bytes, **props: str) -> None:
    """A wait-queue record as it is, the way no send could make it."""
    b.leader.ensure_topic(TIMER_TOPIC, TIMER_QUEUES)
    out = b.leader.send(
        TIMER_TOPIC, WAIT_QUEUE, [Message(TIMER_TOPIC, WAIT_QUEUE, body, properties=props)], True
    )
    assert out.status is SendStatus.SEND_OK


def test_one_bad_message_is_skipped_and_the_rest_go_on(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    at = wall() + 1_000
    broker.send(at, b"good-1")
    park(broker, b"to-a-system-topic", **{REAL_TOPIC: "%SCHEDULE%", REAL_QID: "0", DELIVER_MS: str(at)})
    park(broker, b"no-such-queue", **{REAL_TOPIC: "orders", REAL_QID: "7", DELIVER_MS: str(at)})
    park(broker, b"no-time", **{REAL_TOPIC: "orders", REAL_QID: "0"})
    broker.send(at, b"good-2")
    assert broker.timer.run_once(at) == 2
    assert broker.bodies() == [b"good-1", b"good-2"]
    assert broker.metric("tailrace_timer_skipped_total") == 3
    assert sum("is skipped" in r.getMessage() for r in caplog.records) == 3
    assert broker.timer.state.low == 5  # nothing left holding the wait queue


def test_a_message_that_keeps_failing_waits_then_is_skipped(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = wall() + 1_000
    give_up = broker.timer.give_up_ms
    broker.send(at, b"fails")
    broker.send(at, b"fine", topic="other")
    broker.send(at + give_up + 1_000, b"fine-later", topic="other")
    real = broker.leader.send

    def flaky(topic: str, *a: Any, **kw: Any) -> Any:
        if topic == "orders":
            raise RuntimeError("unexpected")
        return real(topic, *a, **kw)

    monkeypatch.setattr(broker.leader, "send", flaky)
    assert broker.timer.run_once(at) == 1  # the other one goes on
    assert broker.timer.run_once(at + 500) == 0 and broker.timer.state.pending  # waits RETRY_MS
    broker.timer.run_once(at + give_up + 1_000)  # another one stored in the same pass: its own fault
    assert set(broker.timer.state.pending) == set() and broker.metric("tailrace_timer_skipped_total") == 1


def test_a_fault_every_store_hits_skips_nothing(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error on every store (a bug, not a message) for longer
    than give_up_ms: no message is skipped, all come once it is gone."""
    at = wall() + 1_000
    broker.send(at, b"a")
    broker.send(at, b"b", topic="other")
    real = broker.leader.send

    def broken(topic: str, *a: Any, **kw: Any) -> Any:
        if topic in ("orders", "other"):
            raise RuntimeError("unexpected, everywhere")
        return real(topic, *a, **kw)

    monkeypatch.setattr(broker.leader, "send", broken)
    for t in range(0, 3 * broker.timer.give_up_ms, 1_000):
        assert broker.timer.run_once(at + t) == 0
    assert broker.metric("tailrace_timer_skipped_total") == 0 and len(broker.timer.state.pending) == 2
    monkeypatch.setattr(broker.leader, "send", real)
    assert broker.timer.run_once(at + 3 * broker.timer.give_up_ms) == 2
    assert broker.bodies() == [b"a"] and broker.bodies("other") == [b"b"]


def test_a_storage_error_is_never_a_bad_message(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO storing in one topic while another works, for longer than
    give_up_ms: the message is kept and retried (each failure counted), not
    skipped; it is stored once the disk is back. (It was once isolated as a
    bad message and skipped after 30 s: lost for good.)"""
    at = wall() + 1_000
    give_up = broker.timer.give_up_ms
    broker.send(at, b"kept")
    real = broker.leader.send
    eio = OSError(errno.EIO, "Input/output error")

    def failing_disk(topic: str, *a: Any, **kw: Any) -> Any:
        if topic == "orders":
            raise eio
        return real(topic, *a, **kw)

    monkeypatch.setattr(broker.leader, "send", failing_disk)
    for i, t in enumerate(range(0, 2 * give_up, 1_000)):
        broker.send(at + t, b"fine-%d" % i, topic="other")  # others stored meanwhile
        with pytest.raises(OSError):
            broker.timer.run_once(at + t)
    assert broker.metric("tailrace_timer_skipped_total") == 0
    assert 0 in broker.timer.state.pending and broker.bodies() == []
    monkeypatch.setattr(broker.leader, "send", real)
    broker.timer.run_once(at + 2 * give_up)
    assert broker.bodies() == [b"kept"] and not broker.timer.state.pending


def test_rolls_and_snapshots_bound_the_rebuild_by_what_is_pending(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    """One message far ahead and a stream of short ones: without rolls the
    whole stream would be re-read at a restart."""
    b = open_broker(tmp_path, small_config)
    now = wall()
    b.timer.state.roll_slack, b.timer.state.snapshot_min = 20, 20
    b.send(now + 3_600_000, b"far")
    for i in range(300):
        b.send(now + 1 + i, b"s%d" % i)
        b.timer.run_once(now + 1 + i)
    s = b.timer.state
    assert len(b.bodies()) == 300 and len(s.pending) == 1 and s.low in s.pending  # "far" holds `low`
    assert s.loaded - s.low <= 2 * len(s.pending) + 20 + 2
    assert b.metric("tailrace_timer_rolled_total") >= 1
    close(b)
    b = open_broker(tmp_path, small_config)
    try:
        read: list[int] = []
        real_apply = b.timer.state.apply
        b.timer.state.apply = lambda p: (read.append(1), real_apply(p))  # type: ignore[method-assign]
        b.timer.run_once(now + 400)
        s = b.timer.state
        assert len(read) <= 20 + 2  # from the last snapshot on
        assert s.loaded - s.low <= 2 * 1 + 20 + 2 and len(s.pending) == 1
        assert len(b.bodies()) == 300  # nothing again
        b.timer.run_once(now + 3_600_000)
        assert b.bodies()[-1] == b"far"
        assert len(b.records(TIMER_TOPIC, PROGRESS_QUEUE)) > 0
    finally:
        close(b)


def test_once_delivered_a_delayed_message_holds_back_no_retention(broker: Broker) -> None:
    """The timer's committed offsets follow what is pending: drained, it
    holds nothing back (they once moved only at a snapshot, after 4096
    marks: one delayed message kept every segment after it forever)."""
    now = wall()
    broker.send(now + 1_000, b"x")
    broker.timer.run_once(now)
    assert broker.timer.run_once(now + 1_000) == 1
    broker.timer.run_once(now + 1_000 + COMMIT_MS)  # (commits wait COMMIT_MS)
    for _ in range(300):  # 300 KB: segments of 64 KiB behind the delayed message
        broker.send(0, b"y" * 1000)
    store = broker.core.store
    wait_record = store.physical_offset_of(TIMER_TOPIC, WAIT_QUEUE, 0)
    assert wait_record is not None and broker.core.retention_floor() is None
    assert store.enforce_retention(wall() + 1000 * 3_600_000)
    assert store.commitlog.min_offset > wait_record


def test_a_restart_after_a_release_delivers_nothing_twice_and_keeps_what_waits(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    b = open_broker(tmp_path, small_config)
    now = wall()
    b.send(now + 1_000, b"soon")
    b.send(now + 3_600_000, b"far")
    b.timer.run_once(now + 1_000)
    b.timer.run_once(now + 1_000 + COMMIT_MS)
    committed = b.core.offsets.query(TIMER_GROUP, TIMER_TOPIC, PROGRESS_QUEUE)
    assert committed == b.core.store.queue_offsets(TIMER_TOPIC, PROGRESS_QUEUE)[1]  # no record needed
    assert b.core.retention_floor() == b.core.store.physical_offset_of(TIMER_TOPIC, WAIT_QUEUE, 1)
    close(b)
    b = open_broker(tmp_path, small_config)
    try:
        b.timer.run_once(now + 2_000)
        assert b.bodies() == [b"soon"] and set(b.timer.state.pending) == {1}
        b.timer.run_once(now + 3_600_000)
        assert b.bodies() == [b"soon", b"far"]
    finally:
        close(b)


def test_progress_larger_than_a_record_is_written_in_parts(tmp_path: Path, small_config: StoreConfig) -> None:
    """A snapshot of 4096 offsets is over SMALL's 16 KiB max_message_bytes:
    it once failed every pass, and no progress was written again."""
    b = open_broker(tmp_path, small_config)
    now = wall()
    b.timer.state.roll_slack, b.timer.state.snapshot_min = 10_000, 3_500
    b.send(now + 3_600_000, b"far")  # holds `low`: the done offsets pile above it
    for _ in range(16):
        b.leader.send("orders", 0, [Message("orders", 0, b"s", deliver_at_ms=now + 1_000)] * 256)
    for _ in range(17):
        b.timer.run_once(now + 1_000)
    assert len(b.bodies()) == 4096 and not b.timer.state._delta
    progress = b.records(TIMER_TOPIC, PROGRESS_QUEUE)
    assert any(r.body.startswith(b'{"kind":"snapshot"') for r in progress)
    assert max(len(r.body) for r in progress) < small_config.max_message_bytes
    close(b)
    b = open_broker(tmp_path, small_config)
    try:
        b.timer.run_once(now + 1_000)
        assert len(b.bodies()) == 4096 and set(b.timer.state.pending) == {0}  # nothing again
    finally:
        close(b)


def test_rolls_copy_a_bounded_share_of_the_bytes_delivered(broker: Broker) -> None:
    """Five 15 KB messages far ahead, 500 one-byte ones delivered past them:
    rolls once copied the large ones again and again (95 rolls, 1.8 MB for
    500 bytes delivered); now they copy at most ROLL_RATIO x what was
    delivered."""
    now = wall()
    broker.timer.state.roll_slack = 20
    for _ in range(5):
        broker.send(now + 3_600_000, b"L" * 15_000)
    for i in range(500):
        broker.send(now + 1 + i, b"s")
        broker.timer.run_once(now + 1 + i)
    assert len(broker.bodies()) == 500
    rolled = broker.metric("tailrace_timer_rolled_bytes_total")
    assert rolled <= ROLL_RATIO * 500 and broker.metric("tailrace_timer_rolled_total") == 0
    broker.timer.run_once(now + 3_600_000)
    assert len(broker.bodies()) == 505


def test_a_retiring_master_takes_no_client_write_while_its_timer_finishes(broker: Broker) -> None:
    """retire() waits for the timer's pass (its progress written) with the
    timer thread running; meanwhile every other write is refused. (Clients'
    sends were once acknowledged during that wait, up to 10 s, on a master
    about to follow another.)"""
    in_pass, release = threading.Event(), threading.Event()
    t = broker.timer
    real = t._roll

    def slow() -> None:  # a pass that delivered, slow to end
        if t.delivered:
            in_pass.set()
            release.wait(10)
        real()

    t._roll = slow  # type: ignore[method-assign]
    broker.send(wall() + 20, b"due")
    t.start()
    assert in_pass.wait(10)
    retiring = threading.Thread(target=broker.leader.retire)
    retiring.start()
    poll_until(t._stop.is_set, 10, "retire waits for the timer")
    out = broker.send(0, b"client")
    assert out.status is SendStatus.NOT_MASTER and retiring.is_alive()
    release.set()
    retiring.join(10)
    assert not retiring.is_alive() and broker.bodies() == [b"due"]
    assert broker.core.offsets.query(TIMER_GROUP, TIMER_TOPIC, WAIT_QUEUE) == 1  # its progress written


def test_the_thread_passes_again_at_once_while_messages_are_due(broker: Broker) -> None:
    """A pass stores BATCH (256) messages at most; the thread no longer waits
    a tick between passes while more are due (once about 5k a second at
    most: a million due at 09:00 took over 200 s)."""
    t = broker.timer
    t.tick_s = 1.5
    at = wall() + 10
    for _ in range(8):
        broker.leader.send("orders", 0, [Message("orders", 0, b"m", deliver_at_ms=at)] * 256)
    t.start()
    try:
        poll_until(lambda: len(broker.bodies()) == 2048, 2.9, "all delivered before a second tick")
    finally:
        t.stop()
