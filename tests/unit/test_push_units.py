"""Push-consumer building blocks: the process queue's commit point and flow
control, retry planning and delay levels, and queue locks (fake clock)."""

from __future__ import annotations

import threading

import pytest

from consumer.process_queue import ProcessQueue
from consumer.pull_consumer import ReceivedMessage
from core.errors import InvalidArgumentError, InvalidTopicError
from core.queue_locks import QueueLocks
from core.record import validate_topic
from core.retry import (
    DEFAULT_DELAYS,
    DELIVER_AT,
    ORIGIN_TOPIC,
    REAL_TOPIC,
    RECONSUME_TIMES,
    SCHEDULE_TOPIC,
    check_creatable,
    parse_delays,
    plan_send_back,
)

pytestmark = pytest.mark.unit


def msg(offset: int, size: int = 10) -> ReceivedMessage:
    return ReceivedMessage("t", 0, offset, 0, 0, 0, 0, "", "", {}, b"x" * size, 0)


def test_commit_point_is_the_lowest_unprocessed_offset() -> None:
    pq = ProcessQueue()
    pq.add([msg(o) for o in range(10, 20)])
    assert pq.commit_point(20) == 10
    pq.done([11, 12, 15])  # out of order: 10 still pending
    assert pq.commit_point(20) == 10
    pq.done([10])
    assert pq.commit_point(20) == 13
    pq.done([13, 14, 16, 17, 18, 19])
    assert pq.commit_point(20) == 20 and pq.count == 0 and pq.bytes == 0


def test_flow_control_counts_messages_and_bytes() -> None:
    pq = ProcessQueue()
    pq.add([msg(o, 100) for o in range(5)])
    pq.add([msg(3, 100)])  # pulled again: not counted twice
    assert (pq.count, pq.bytes) == (5, 500)
    assert pq.over(5, 10_000, 99) and pq.over(100, 500, 99) and not pq.over(6, 501, 99)
    pq.done([0])
    assert not pq.over(5, 10_000, 99)
    # one stuck message: few pending, but the span from it to the newest pulled is too wide
    pq.done([2, 3, 4])
    pq.add([msg(o, 1) for o in range(5, 50)])
    pq.done(list(range(5, 50)))
    assert pq.count == 1 and not pq.over(100, 10_000, 50)
    pq.add([msg(50, 1)])
    assert not pq.over(100, 10_000, 50)  # offsets 1..50: a span of 49
    pq.add([msg(51, 1)])
    assert pq.over(100, 10_000, 50)  # 1..51: 50, paused though only 3 are pending
    pq.done([1])
    assert not pq.over(100, 10_000, 50)


def test_orderly_take_put_back_and_one_thread() -> None:
    pq = ProcessQueue()
    pq.add([msg(o) for o in range(4)], orderly=True)
    assert pq.acquire() and not pq.acquire()  # one thread at a time
    batch = pq.take(2)
    assert [m.queue_offset for m in batch] == [0, 1]
    pq.put_back(batch)  # failed: first again
    assert [m.queue_offset for m in pq.take(3)] == [0, 1, 2]
    assert pq.release()  # offset 3 still waiting
    assert pq.acquire()
    pq.take(1)
    assert not pq.release()


def test_send_back_plan_walks_the_levels_then_dead_letters() -> None:
    delays = parse_delays("1s 5s 10s")
    props: dict[str, str] = {"k": "v"}
    topics, levels, dues, counts = [], [], [], []
    for _ in range(5):
        topic, queue, props, attempts = plan_send_back(props, "orders", "g", 4, delays, 1000)
        counts.append(attempts)
        topics.append(topic)
        levels.append(queue)
        dues.append(int(props.get(DELIVER_AT, "0")))
        if topic == SCHEDULE_TOPIC:
            assert props[REAL_TOPIC] == "%RETRY%g"
            props = {k: v for k, v in props.items() if k not in (REAL_TOPIC, DELIVER_AT)}  # as delivered
    assert topics == [SCHEDULE_TOPIC] * 4 + ["%DLQ%g"]  # max_reconsume=4: the fifth failure
    assert counts == [1, 2, 3, 4, 5]
    assert levels[:4] == [0, 1, 2, 2]  # past the last level: the last again
    assert dues[:4] == [2000, 6000, 11000, 11000]
    assert props[RECONSUME_TIMES] == "5" and props[ORIGIN_TOPIC] == "orders" and props["k"] == "v"
    assert REAL_TOPIC not in props and DELIVER_AT not in props


def test_delay_levels_parse_and_refuse_bad_input() -> None:
    assert parse_delays("500ms 1s 2m 1h") == (0.5, 1.0, 120.0, 3600.0)
    assert len(parse_delays(DEFAULT_DELAYS)) == 18
    for bad in ("", "5", "1x", "-1s", " ".join(["1s"] * 65)):
        with pytest.raises(InvalidArgumentError):
            parse_delays(bad)


def test_percent_topics_belong_to_the_broker() -> None:
    validate_topic("%DLQ%g")  # readable
    check_creatable("%RETRY%g")
    check_creatable("%DLQ%g")
    check_creatable("orders")
    for bad in ("%SCHEDULE%", "%RETRY%", "%other"):
        with pytest.raises(InvalidTopicError):
            check_creatable(bad)


def test_queue_locks_lease_renewal_and_handover() -> None:
    locks = QueueLocks()
    assert locks.lock("g", "t", "a", [0, 1], 1000, 0) == [0, 1]
    assert locks.lock("g", "t", "b", [0, 1, 2], 1000, 500) == [2]  # a holds 0 and 1
    assert locks.lock("g", "t", "a", [0], 1000, 900) == [0]  # renewed until 1900
    assert locks.lock("g", "t", "b", [0, 1], 1000, 1500) == [1]  # 1 lapsed at 1000
    locks.unlock("g", "t", "b", [0])  # not b's: nothing happens
    assert locks.holder("g", "t", 0, 1600) == "a"
    locks.unlock("g", "t", "a", [0])  # a committed: handed over
    assert locks.lock("g", "t", "b", [0], 1000, 1600) == [0]
    assert locks.lock("other", "t", "c", [0], 1000, 1600) == [0]  # per group


def test_delayed_calls_run_in_due_order_on_one_thread() -> None:
    from consumer.delayed import Delayed
    from deploy.waits import poll_until

    d = Delayed()
    ran: list[tuple[str, str]] = []
    try:
        for name, delay in (("slow", 0.2), ("fast", 0.05), ("mid", 0.1)):
            d.call_later(delay, lambda n=name: ran.append((n, threading.current_thread().name)))
        d.call_later(60, lambda: ran.append(("never", "")))
        poll_until(lambda: len(ran) == 3, 5, "the three due calls")
        assert [n for n, _ in ran] == ["fast", "mid", "slow"]
        assert len({t for _, t in ran}) == 1  # one thread for all of them
        assert d.pending() == 1
    finally:
        d.close()
    assert d.pending() == 0 and len(ran) == 3  # closing drops what is pending
