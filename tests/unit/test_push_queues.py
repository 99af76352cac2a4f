"""PushQueues: the state both push consumers share (consumer/push_queues.py),
without sockets: settings checked once, runs handed out once per offset,
the commit point held by unprocessed and revoked queues, flow control,
orderly mode's lock check."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from consumer.pull_consumer import ReceivedMessage
from consumer.push_queues import ConsumeStatus, PushQueues, PushSettings, succeeded
from core.errors import InvalidArgumentError
from core.route import MessageQueue

pytestmark = pytest.mark.unit
MQ0, MQ1 = MessageQueue("b", 0), MessageQueue("b", 1)


def msg(queue: int, offset: int, size: int = 10, topic: str = "t") -> ReceivedMessage:
    return ReceivedMessage(topic, queue, offset, 0, 0, 0, 0, "", "", {}, b"x" * size, 0, "b")


def test_settings_refuse_what_no_consumer_can_run_with() -> None:
    PushSettings().check("g")
    bad: list[dict[str, Any]] = [
        dict(batch_size=0), dict(max_cached_messages=0), dict(max_cached_bytes=10),
        dict(max_reconsume=-1), dict(retry_delays_s=()), dict(retry_delays_s=(1.0, -1.0)),
    ]  # fmt: skip
    for kw in bad:
        with pytest.raises(InvalidArgumentError):
            PushSettings(**kw).check("g")
    with pytest.raises(InvalidArgumentError, match="retry topic"):
        PushSettings().check("g" * 300)
    PushSettings(send_back=False).check("g" * 300)  # no retry topic: no such limit
    s = PushSettings(retry_delays_s=(0.1, 0.5))
    assert [s.retry_delay(a) for a in range(4)] == [0.1, 0.5, 0.5, 0.5]
    assert succeeded(None) and succeeded(ConsumeStatus.SUCCESS)
    assert not succeeded(ConsumeStatus.RETRY_LATER) and not succeeded(True)


def test_runs_group_by_queue_and_hand_out_each_offset_once() -> None:
    q = PushQueues(PushSettings())
    runs = list(q.runs([msg(0, 0), msg(0, 1), msg(1, 0), msg(1, 1), msg(1, 2)]))
    assert [(k, [m.queue_offset for m in ms]) for k, _, ms in runs] == [
        (("t", MQ0), [0, 1]),
        (("t", MQ1), [0, 1, 2]),
    ]
    # a retried pull brings offsets 1 and 2 again while they wait: only 3 is new
    again = list(q.runs([msg(1, 1), msg(1, 2), msg(1, 3)]))
    assert [[m.queue_offset for m in ms] for _, _, ms in again] == [[3]]
    assert list(q.runs([msg(0, 0), msg(0, 1)])) == []  # nothing new: no run at all
    assert q.cached() == (6, 60)


def test_commit_point_waits_for_the_lowest_unprocessed_and_for_revoked_queues() -> None:
    q = PushQueues(PushSettings())
    ((key, pq, _),) = q.runs([msg(0, o) for o in range(10)])
    assert q.commit_point(key, 10) == 0
    pq.done([0, 1, 2, 5])
    assert q.commit_point(key, 10) == 3
    q.revoked(key)  # given up while 3.. are in flight: the commit still stops at 3
    assert pq.dropped and q.commit_point(key, 10) == 3
    q.released(key)  # committed and let go: a queue it no longer has commits what was pulled
    assert q.commit_point(key, 10) == 10
    assert q.commit_point(("t", MQ1), 7) == 7  # never pulled here


def test_flow_control_pauses_a_full_queue() -> None:
    q = PushQueues(PushSettings(max_cached_messages=3, max_cached_bytes=1024, max_span=100))
    ((key, pq, _),) = q.runs([msg(0, o) for o in range(3)])
    assert q.paused(key) and not q.paused(("t", MQ1))
    pq.done([0])
    assert not q.paused(key)


def test_orderly_pulls_and_commits_only_held_queues() -> None:
    q = PushQueues(PushSettings(orderly=True))
    key = ("t", MQ0)
    assert q.paused(key) and q.commit_point(key, 5) is None  # nothing is held until locks are wired
    held = {MQ0}
    released: list[MessageQueue] = []
    q.holds = lambda mq: mq in held
    q.on_released = lambda mq, pq: released.append(mq)
    assert not q.paused(key) and q.commit_point(key, 5) == 5
    assert q.paused(("t", MQ1)) and q.commit_point(("t", MQ1), 5) is None
    ((_, pq, _),) = q.runs([msg(0, 0), msg(0, 1)])
    assert pq.acquire()  # a handler runs on it
    revoking = threading.Thread(target=q.revoked, args=(key,))
    revoking.start()  # an orderly revoke waits for the handler to stop
    revoking.join(0.2)
    assert revoking.is_alive()
    held.clear()
    assert q.commit_point(key, 2) == 0  # revoked, not held: still committed, at its lowest pending
    pq.release()
    revoking.join(5)
    assert not revoking.is_alive()
    q.released(key)
    assert released == [MQ0]
