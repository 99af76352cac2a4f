"""The retry schedule cannot be jammed (issue 16): bad attempt counts, group
names too long for their retry topic, heads that cannot be moved and
`%SCHEDULER%` offsets past the end. One leader role on a store in a temp
dir, its scheduler driven by hand (`run_once`) with a fake clock that is also
the store's clock (`store_ms`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.broker.core import BrokerCore
from core.broker.role import SendOutcome
from core.errors import InvalidArgumentError, TailraceError
from core.offsets import U64
from core.record import Message, iter_records
from core.retry import (
    DELIVER_AT,
    REAL_TOPIC,
    RECONSUME_TIMES,
    SCHEDULE_TOPIC,
    SCHEDULER_GROUP,
    parse_delays,
    plan_send_back,
)
from core.roles import SendStatus
from core.store import StoreConfig
from tests.helpers.leader_core import LeaderBroker, close_core, open_core

pytestmark = pytest.mark.unit
DELAYS = "1s 5s 2h"


@dataclass
class Broker(LeaderBroker):
    clock: list[int]

    def tick(self, ms: int) -> int:
        """Advance the clock and run one scheduler pass; how many moved."""
        self.clock[0] += ms
        return self.leader.scheduler.run_once(self.clock[0])

    def send_back(self, body: bytes, group: str = "g", props: dict[str, str] | None = None) -> str:
        msg = Message("orders", 0, body, properties=props or {})
        return self.leader.send_back(group, "orders", msg, 16)[0]

    def park(self, level: int, body: bytes, **props: str) -> None:
        """Store a message in the schedule as it is, the way a broker before
        these checks may have left it (no client can send to `%SCHEDULE%`)."""
        self.leader.ensure_topic(SCHEDULE_TOPIC, len(parse_delays(DELAYS)))
        out = self.leader.send(
            SCHEDULE_TOPIC, level, [Message(SCHEDULE_TOPIC, level, body, properties=props)], True
        )
        assert out.status is SendStatus.SEND_OK

    def bodies(self, topic: str) -> list[bytes]:
        store = self.core.store
        if store.topics.queue_count(topic) is None:
            return []
        read = store.read(topic, 0, 0, 1000, 1 << 20)
        return [r.body for r in iter_records(read.data, verify=False)]

    def metric(self, name: str, level: int) -> float:
        value = self.core.metrics.registry.get_sample_value(name, {"level": str(level)})
        return value or 0.0


def open_broker(
    directory: Path, config: StoreConfig, clock: list[int], delays: str = DELAYS, **overrides: Any
) -> BrokerCore:
    return open_core(directory, config, lambda: clock[0], broker__retry_delays=delays, **overrides)


@pytest.fixture
def broker(tmp_path: Path, small_config: StoreConfig) -> Iterator[Broker]:
    # near the wall clock: the code before these checks compared DELIVER_AT, set from it
    clock = [int(time.time() * 1000)]
    core = open_broker(tmp_path, small_config, clock)
    try:
        core.leader().create_topic("orders", 2)
        yield Broker(core, clock)
    finally:
        close_core(core)


# ---- the attempt count ------------------------------------------------------------------


def test_a_bad_attempt_count_is_clamped_to_the_levels() -> None:
    delays = parse_delays(DELAYS)
    for raw in ("-1", "-5", "-100", "abc", "", " 2", "+2", "1e3", "0x10", "\u0663"):
        topic, level, props, attempts = plan_send_back(
            {RECONSUME_TIMES: raw}, "orders", "g", 16, delays, 1000
        )
        assert (topic, level, attempts) == (SCHEDULE_TOPIC, 0, 1), raw  # counted as no attempt yet
        assert props[RECONSUME_TIMES] == "1" and props[DELIVER_AT] == "2000", raw
    for raw in ("99", "0099", "9" * 50, "2" * 5000):  # past max_reconsume, however large: the dead letters
        topic, level, props, attempts = plan_send_back(
            {RECONSUME_TIMES: raw}, "orders", "g", 16, delays, 1000
        )
        assert topic == "%DLQ%g" and level == 0 and 16 < attempts <= 1001, raw
    topic, level, props, _ = plan_send_back({RECONSUME_TIMES: "7"}, "orders", "g", 16, delays, 1000)
    assert (topic, level, props[DELIVER_AT]) == (SCHEDULE_TOPIC, 2, str(1000 + 7_200_000))  # the last level


def test_a_garbage_count_does_not_jam_its_level(broker: Broker) -> None:
    assert broker.send_back(b"attack", props={RECONSUME_TIMES: "-1"}) == SCHEDULE_TOPIC
    assert broker.send_back(b"normal") == SCHEDULE_TOPIC
    assert broker.tick(500) == 0  # not early
    broker.tick(1000)
    assert broker.bodies("%RETRY%g") == [b"attack", b"normal"]


def test_the_due_time_comes_from_the_level_not_the_message(broker: Broker) -> None:
    """A head that claims to be due in ten days (stored by an older broker)
    waits its level's delay, like every message of that level."""
    far = str(broker.clock[0] + 10 * 86_400_000)
    broker.park(0, b"claims ten days", **{REAL_TOPIC: "%RETRY%g", DELIVER_AT: far})
    broker.park(0, b"claims nothing", **{REAL_TOPIC: "%RETRY%g", DELIVER_AT: "not a number"})
    broker.send_back(b"normal")
    assert broker.tick(900) == 0
    assert broker.tick(200) == 3
    assert broker.bodies("%RETRY%g") == [b"claims ten days", b"claims nothing", b"normal"]


def test_shorter_delays_after_a_restart_hold_no_level_up(tmp_path: Path, small_config: StoreConfig) -> None:
    """The delays are changed from `2h 5s` to `1s 5s`: what waits at level 0
    is due a second after it was stored, like what comes after it."""
    clock = [int(time.time() * 1000)]
    core = open_broker(tmp_path, small_config, clock, "2h 5s")
    try:
        core.leader().create_topic("orders", 1)
        Broker(core, clock).send_back(b"parked under 2h")
    finally:
        close_core(core)
    b = Broker(open_broker(tmp_path, small_config, clock, "1s 5s"), clock)
    try:
        b.send_back(b"parked under 1s")
        assert b.tick(1100) == 2
        assert b.bodies("%RETRY%g") == [b"parked under 2h", b"parked under 1s"]
    finally:
        close_core(b.core)


def test_levels_added_after_a_restart_grow_the_schedule(tmp_path: Path, small_config: StoreConfig) -> None:
    clock = [int(time.time() * 1000)]
    core = open_broker(tmp_path, small_config, clock, "1s 5s")
    try:
        core.leader().create_topic("orders", 1)
        Broker(core, clock).send_back(b"first")
    finally:
        close_core(core)
    b = Broker(open_broker(tmp_path, small_config, clock, "1s 5s 10s"), clock)
    try:
        assert b.send_back(b"third attempt", props={RECONSUME_TIMES: "2"}) == SCHEDULE_TOPIC
        assert b.core.store.topics.queue_count(SCHEDULE_TOPIC) == 3
        assert b.tick(9_000) == 1 and b.tick(1_100) == 1
        assert b.bodies("%RETRY%g") == [b"first", b"third attempt"]
    finally:
        close_core(b.core)


def test_a_message_stored_in_the_future_is_due_now(broker: Broker) -> None:
    """The clock was set back after it was stored: better early than a level
    held up until the clock catches up."""
    broker.clock[0] += 3_600_000
    broker.park(0, b"stored an hour ahead", **{REAL_TOPIC: "%RETRY%g"})
    broker.clock[0] -= 3_600_000
    broker.send_back(b"normal")
    assert broker.tick(10) == 1
    assert broker.tick(1000) == 1 and broker.bodies("%RETRY%g") == [b"stored an hour ahead", b"normal"]


# ---- group names, heads that cannot be moved --------------------------------------------


def test_a_group_whose_retry_topic_would_be_invalid_is_refused_at_send_back(broker: Broker) -> None:
    store = broker.core.store
    before = (store.commitlog.max_offset, broker.core.list_topics())
    for group in ("g" * 121, "g" * 200, "%SCHEDULER%"):
        with pytest.raises(InvalidArgumentError) as exc:
            broker.send_back(b"x", group=group)
        assert exc.value.code == "INVALID_ARGUMENT", group
        assert len(exc.value.message) < 400 and ("%RETRY%" in exc.value.message or "'%'" in exc.value.message)
    assert (store.commitlog.max_offset, broker.core.list_topics()) == before  # nothing stored
    assert broker.send_back(b"x", group="g" * 120) == SCHEDULE_TOPIC  # the longest that fits


def test_a_retry_topic_with_no_room_under_the_topic_quota_is_refused_at_send_back(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    """The retry topic is made at SendBack: a full quotas.max_topics refuses
    the message there (the consumer retries it locally), instead of the
    scheduler finding no room for it later and dropping it."""
    clock = [int(time.time() * 1000)]
    b = Broker(open_broker(tmp_path, small_config, clock, quotas__max_topics=3), clock)
    try:
        b.core.leader().create_topic("orders", 1)
        b.send_back(b"fits")  # %RETRY%g and %SCHEDULE%: three topics
        before = b.core.store.commitlog.max_offset
        with pytest.raises(TailraceError) as exc:
            b.send_back(b"no room", group="h")
        assert exc.value.code == "QUOTA_EXCEEDED"
        assert (
            b.core.store.commitlog.max_offset == before
            and b.core.store.topics.queue_count("%RETRY%h") is None
        )
        assert b.tick(1100) == 1 and b.bodies("%RETRY%g") == [b"fits"]
    finally:
        close_core(b.core)


def test_a_head_that_cannot_be_moved_goes_to_the_dead_letters(broker: Broker, caplog: Any) -> None:
    long_retry = "x" * 121  # %RETRY%xxx.. is too long, %DLQ%xxx.. fits
    broker.park(0, b"to its DLQ", **{REAL_TOPIC: "%RETRY%" + long_retry})
    broker.park(0, b"nowhere to go", **{REAL_TOPIC: "%RETRY%" + "y" * 200})
    broker.park(0, b"not a retry topic", **{REAL_TOPIC: "orders"})
    broker.park(0, b"no target", **{DELIVER_AT: "0"})
    broker.send_back(b"normal")
    with caplog.at_level(logging.WARNING, logger="master.scheduler"):
        assert broker.tick(1100) == 1
    assert broker.bodies("%RETRY%g") == [b"normal"]
    assert broker.bodies("%DLQ%" + long_retry) == [b"to its DLQ"]
    assert broker.bodies("orders") == []  # never moved into a client topic
    assert broker.metric("tailrace_schedule_dead_lettered_total", 0) == 1
    assert broker.metric("tailrace_schedule_skipped_total", 0) == 3
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 3  # one per skipped message
    assert broker.tick(1000) == 0 and broker.metric("tailrace_schedule_skipped_total", 0) == 3  # once each


def test_a_damaged_head_is_skipped(broker: Broker, tmp_path: Path) -> None:
    broker.send_back(b"damaged")
    broker.send_back(b"intact")
    read = broker.core.store.read(SCHEDULE_TOPIC, 0, 0, 1, 1 << 20)
    (head,) = iter_records(read.data, verify=False)
    segment = tmp_path / "store" / "commitlog" / f"{0:020d}"
    with open(segment, "r+b") as f:  # its last body byte: the CRC no longer matches
        f.seek(head.physical_offset + head.size - 1)
        last = f.read(1)[0]
        f.seek(head.physical_offset + head.size - 1)
        f.write(bytes([last ^ 0xFF]))
    assert broker.tick(1100) == 1
    assert broker.bodies("%RETRY%g") == [b"intact"]
    assert broker.metric("tailrace_schedule_skipped_total", 0) == 1


def test_one_levels_failure_never_stops_the_others(broker: Broker, monkeypatch: Any) -> None:
    broker.park(0, b"jams level 0", **{REAL_TOPIC: "%RETRY%" + "y" * 200})
    broker.send_back(b"level 1", props={RECONSUME_TIMES: "1"})
    broker.send_back(b"level 2", props={RECONSUME_TIMES: "2"})
    store, real_read = broker.core.store, broker.core.store.read

    def read(topic: str, queue_id: int, *args: Any, **kwargs: Any) -> Any:
        if topic == SCHEDULE_TOPIC and queue_id == 1:
            raise RuntimeError("level 1 is broken")
        return real_read(topic, queue_id, *args, **kwargs)

    monkeypatch.setattr(store, "read", read)
    assert broker.tick(7_200_100) == 1  # level 2 moved although levels 0 and 1 failed
    assert broker.bodies("%RETRY%g") == [b"level 2"]
    assert broker.metric("tailrace_schedule_level_failures_total", 1) == 1
    monkeypatch.setattr(store, "read", real_read)
    assert broker.tick(1) == 1 and broker.bodies("%RETRY%g") == [b"level 2", b"level 1"]


def test_a_head_that_keeps_failing_goes_to_the_dead_letters_after_a_while(
    broker: Broker, monkeypatch: Any
) -> None:
    leader, real_send = broker.leader, broker.leader.send

    def send(topic: str, *args: Any, **kwargs: Any) -> SendOutcome:
        if topic == "%RETRY%g":
            raise RuntimeError("the retry topic cannot take it")
        return real_send(topic, *args, **kwargs)

    monkeypatch.setattr(leader, "send", send)
    broker.send_back(b"unlucky")
    assert broker.tick(1100) == 0
    give_up = leader.scheduler.give_up_ms
    assert broker.tick(give_up - 200) == 0 and broker.bodies("%DLQ%g") == []  # still retried
    broker.tick(300)
    assert broker.bodies("%DLQ%g") == [b"unlucky"] and broker.bodies("%RETRY%g") == []
    assert broker.metric("tailrace_schedule_dead_lettered_total", 0) == 1


def test_a_broker_that_cannot_write_keeps_the_head(broker: Broker, monkeypatch: Any) -> None:
    """Nothing stored (no in-sync slave, fenced): the head waits, however
    long, and is neither dead-lettered nor skipped."""
    leader, real_send = broker.leader, broker.leader.send

    def send(topic: str, queue_id: int, messages: Any, internal: bool = False) -> SendOutcome:
        return SendOutcome(SendStatus.SLAVE_NOT_AVAILABLE, topic, queue_id, [], "no slave")

    broker.send_back(b"patient")
    monkeypatch.setattr(leader, "send", send)
    for _ in range(3):
        assert broker.tick(leader.scheduler.give_up_ms) == 0
    assert broker.bodies("%DLQ%g") == [] and broker.metric("tailrace_schedule_skipped_total", 0) == 0
    monkeypatch.setattr(leader, "send", real_send)
    assert broker.tick(1) == 1 and broker.bodies("%RETRY%g") == [b"patient"]


# ---- offsets ------------------------------------------------------------------------------


def test_the_brokers_own_groups_take_no_client_commits_or_locks(broker: Broker) -> None:
    leader = broker.leader
    broker.send_back(b"x")  # the schedule exists
    for offset in (0, 1, U64):
        with pytest.raises(InvalidArgumentError) as exc:
            leader.commit_offset(SCHEDULER_GROUP, SCHEDULE_TOPIC, 0, offset)
        assert exc.value.code == "INVALID_ARGUMENT"
    with pytest.raises(InvalidArgumentError):
        leader.commit_offset("%other", "orders", 0, 0)
    for call in (
        lambda: leader.lock_queues(SCHEDULER_GROUP, "orders", "c", [0], 10_000),
        lambda: leader.unlock_queues(SCHEDULER_GROUP, "orders", "c", [0]),
    ):
        with pytest.raises(InvalidArgumentError):
            call()
    assert broker.core.offsets.query(SCHEDULER_GROUP, SCHEDULE_TOPIC, 0) is None
    assert broker.tick(1100) == 1  # the scheduler itself still commits
    assert broker.core.offsets.query(SCHEDULER_GROUP, SCHEDULE_TOPIC, 0) == 1


def test_a_commit_past_the_queue_end_is_refused(broker: Broker) -> None:
    leader = broker.leader
    leader.send("orders", 0, [Message("orders", 0, b"m") for _ in range(3)])
    leader.commit_offset("g", "orders", 0, 3)  # the end: everything read
    for offset in (4, U64):
        with pytest.raises(TailraceError) as exc:
            leader.commit_offset("g", "orders", 0, offset)
        assert exc.value.code == "INVALID_OFFSET" and "3" in exc.value.message
    assert broker.core.offsets.query("g", "orders", 0) == 3
    with pytest.raises(TailraceError):
        leader.commit_offset("g", "orders", 1, 1)  # queue 1 is empty


def test_a_scheduler_offset_past_the_end_does_not_freeze_its_level(broker: Broker) -> None:
    """An older broker took such a commit: the scheduler reads on from the
    level's end, as a pull past the end moves to the end."""
    broker.send_back(b"before")
    broker.core.offsets.commit(SCHEDULER_GROUP, SCHEDULE_TOPIC, 0, U64)
    assert broker.tick(1100) == 0  # "before" counts as moved, as that commit claimed
    assert broker.core.offsets.query(SCHEDULER_GROUP, SCHEDULE_TOPIC, 0) == 1  # repaired
    broker.send_back(b"after")
    assert broker.tick(1100) == 1 and broker.bodies("%RETRY%g") == [b"after"]
