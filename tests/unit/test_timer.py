"""The timer's plain logic (core/timer.py): the heap never hands out a
message before its time, what is done moves `low`, progress read back
rebuilds the same state, rolls and snapshots keep a rebuild bounded by what
is pending, and the send-side checks (how far ahead, the cap)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.errors import BrokerBusyError, InvalidArgumentError, InvalidTopicError
from core.record import Message, Record
from core.retry import REAL_TOPIC
from core.timer import (
    DELIVER_MS,
    REAL_QID,
    TIMER_TOPIC,
    WAIT_QUEUE,
    Progress,
    TimerState,
    check_room,
    decode_progress,
    delayed,
    encode_progress,
    from_timer,
    to_timer,
)

pytestmark = pytest.mark.unit
NOW = 1_700_000_000_000
DAY = 86_400_000


def loaded(dues: list[int], **kw: int) -> TimerState:
    s = TimerState(**kw)
    s.committed_low = 0  # as the first rebuild commits it
    for offset, due in enumerate(dues):
        s.load(offset, due, 10)
    return s


def write(
    s: TimerState, now: int, out: list[dict[str, Any]] | None = None, final: bool = False
) -> Progress | None:
    """What the timer thread does with `progress`: its records written (into
    `out`) and its commits made."""
    plan = s.progress(now, final)
    if plan is not None:
        (out if out is not None else []).extend(plan.records)
        s.written(plan, now)
        s.committed(plan, now)
    return plan


def test_nothing_is_handed_out_before_its_time_and_the_earliest_goes_first() -> None:
    s = loaded([NOW + 300, NOW + 100, NOW + 200, NOW + 100])
    assert s.pop_due(NOW + 99, 10) == []
    assert s.pop_due(NOW + 100, 10) == [(1, NOW + 100), (3, NOW + 100)]  # ties in offset order
    assert s.pop_due(NOW + 250, 10) == [(2, NOW + 200)]
    assert s.pop_due(NOW + 10_000, 1) == [(0, NOW + 300)]
    assert len(s.pending) == 4  # handed out, not done until marked


def test_a_randomized_schedule_is_never_early_and_every_message_comes_once() -> None:
    rng = random.Random(18)
    dues = [NOW + rng.randrange(0, 60_000) for _ in range(500)]
    s = loaded(dues)
    seen: list[int] = []
    now = NOW
    while s.pending:
        now += rng.randrange(1, 700)
        for offset, due in s.pop_due(now, rng.randrange(1, 20)):
            assert due == dues[offset] <= now
            if rng.random() < 0.1:  # a failed store: it comes back later
                s.retry_at(offset, now + 50)
                continue
            s.mark_done(offset)
            seen.append(offset)
    assert sorted(seen) == list(range(500))
    assert (s.low, s.done, s.pending_bytes) == (500, set(), 0)


def test_low_moves_over_what_is_done_only() -> None:
    s = loaded([NOW + 5, NOW + 1, NOW + 1, NOW + 9])
    for offset, _ in s.pop_due(NOW + 1, 10):
        s.mark_done(offset)
    assert (s.low, s.done) == (0, {1, 2})  # offset 0 still waits
    s.mark_done(0)
    assert (s.low, s.done) == (3, set())
    assert s.next_due() == NOW + 9


def test_progress_read_back_rebuilds_the_same_state() -> None:
    dues = [NOW + d for d in (50, 10, 20, 900, 30, 40)]
    live = loaded(dues, snapshot_min=3)
    records: list[dict[str, Any]] = []
    for now in (NOW + 10, NOW + 20, NOW + 35, NOW + 50):
        for offset, _ in live.pop_due(now, 10):
            live.mark_done(offset)
        write(live, now, records)
    assert [r["kind"] for r in records] == ["delta", "delta", "snapshot", "delta"]
    again = TimerState()
    for r in records:
        again.apply(decode_progress(encode_progress(r)))
    for offset, due in enumerate(dues):
        again.load(offset, due, 10) if offset >= again.loaded else None
    assert (
        (again.low, again.done, set(again.pending))
        == (live.low, live.done, set(live.pending))
        == (3, {4, 5}, {3})
    )
    # from the last snapshot on is enough
    tail = TimerState()
    for r in records[2:]:
        tail.apply(r)
    assert (tail.low, tail.done) == (live.low, live.done)


def test_a_failed_progress_write_is_made_again_with_later_marks() -> None:
    s = loaded([NOW, NOW, NOW])
    s.mark_done(1)
    plan = s.progress(NOW)
    assert plan is not None and plan.records == [{"kind": "delta", "low": 0, "done": [1]}]
    s.mark_done(0)  # (the write of the first delta failed: not `written`)
    plan = s.progress(NOW)
    assert plan is not None and plan.records == [{"kind": "delta", "low": 2, "done": [0, 1]}]
    s.written(plan, NOW)
    assert s.progress(NOW) is None


def test_done_offsets_piling_above_one_old_message_roll_it() -> None:
    """One message far ahead holds `low`; once the done ones above it pass
    the pending count plus the slack, the oldest pending are rolled."""
    s = loaded([NOW + 3 * DAY] + [NOW + 1] * 6 + [NOW + 2 * DAY], roll_slack=1)
    for offset, _ in s.pop_due(NOW + 1, 3):
        s.mark_done(offset)
    assert s.to_roll(10, 1 << 20) == []  # 3 done, 5 pending + 1 slack
    for offset, _ in s.pop_due(NOW + 1, 3):
        s.mark_done(offset)
    assert s.to_roll(10, 1 << 20) == [0, 7]  # 6 done, 2 pending + 1: the oldest pending first
    assert s.to_roll(1, 1 << 20) == [0]
    s.mark_done(0, rolled=True)  # its copy is appended, loaded later
    assert (s.low, s.done, s.to_roll(10, 1 << 20)) == (7, set(), [])


def test_rolls_copy_no_more_bytes_than_were_delivered() -> None:
    """Large messages far ahead under a stream of small ones: a roll waits
    until roll_ratio x the bytes delivered pays for it (the oldest first:
    rolling a later one would not move `low`)."""
    s = TimerState(roll_slack=1, roll_ratio=1.0)
    s.load(0, NOW + DAY, 1000)
    s.load(1, NOW + DAY, 20)
    for offset in range(2, 1012):
        s.load(offset, NOW + 1, 1)
    for offset, _ in s.pop_due(NOW + 1, 500):
        s.mark_done(offset)
    assert s.roll_credit == 500 and s.to_roll(10, 1 << 20) == []  # 1000 bytes cost more
    for offset, _ in s.pop_due(NOW + 1, 510):
        s.mark_done(offset)
    assert s.to_roll(10, 1 << 20) == [0]  # 1010 delivered: 20 more would pass the credit
    assert s.to_roll(10, 1) == [0]  # past max_bytes, still one
    s.mark_done(0, rolled=True)
    assert s.roll_credit == 10 and s.to_roll(10, 1 << 20) == []


def kinds(plan: Progress | None) -> str:
    if plan is None:
        return "nothing"
    return "release" if plan.release else plan.records[0]["kind"] if plan.records else "commit"


def test_snapshots_come_once_the_marks_outnumber_the_last_one() -> None:
    s = loaded([NOW + DAY] + [NOW + 1] * 20, snapshot_min=4)  # offset 0 holds `low`: done piles above it
    for offset, _ in s.pop_due(NOW + 1, 3):
        s.mark_done(offset)
    assert kinds(write(s, NOW)) == "delta"
    s.mark_done(s.pop_due(NOW + 1, 1)[0][0])
    plan = write(s, NOW)
    assert plan is not None and plan.snapshot and plan.records[0]["done"] == [1, 2, 3, 4]
    for offset, _ in s.pop_due(NOW + 1, 3):
        s.mark_done(offset)
    assert kinds(write(s, NOW)) == "delta"  # 3 marks since a snapshot of 4
    s.mark_done(s.pop_due(NOW + 1, 1)[0][0])
    assert kinds(write(s, NOW)) == "snapshot"


def test_a_mark_is_in_a_snapshot_at_most_snapshot_ms_later() -> None:
    """A quiet timer: few marks, never the count; the snapshot (which holds
    back retention from where it is) still moves with time."""
    s = loaded([NOW + DAY, NOW + 1, NOW + 2], snapshot_ms=60_000, commit_ms=5_000)
    assert write(s, NOW) is None  # nothing done yet
    s.mark_done(s.pop_due(NOW + 1, 1)[0][0])
    assert kinds(write(s, NOW + 1)) == "delta"
    assert write(s, NOW + 59_999) is None
    plan = write(s, NOW + 60_000)
    assert plan is not None and plan.snapshot and plan.records[0]["done"] == [1]
    assert write(s, NOW + 200_000) is None  # nothing new: the snapshot stays


def test_a_large_snapshot_comes_by_time_at_most_one_ms_per_offset() -> None:
    s = loaded([NOW + DAY] + [NOW + 1] * 70_001, snapshot_ms=60_000, snapshot_min=10**9)
    for offset, _ in s.pop_due(NOW + 1, 70_000):
        s.mark_done(offset)
    write(s, NOW)
    assert write(s, NOW + 60_000) is None  # no snapshot of 70k offsets yet (`low` unmoved)
    plan = write(s, NOW + 70_000)
    assert plan is not None and plan.snapshot


def test_with_nothing_done_above_low_the_progress_is_released() -> None:
    """Everything delivered (or only what is pending left above `low`): no
    record is needed; `low` is committed and the progress queue's end, at
    most commit_ms after the last commit (at once when stopping)."""
    s = loaded([NOW + 1, NOW + 2, NOW + DAY], commit_ms=5_000)
    write(s, NOW)
    for offset, _ in s.pop_due(NOW + 2, 10):
        s.mark_done(offset)
    assert (s.low, s.done) == (2, set())
    plan = write(s, NOW + 2)
    assert plan is not None and (kinds(plan), plan.commit_low) == ("delta", None)  # not yet
    assert s.pinned
    plan = write(s, NOW + 5_000)
    assert plan is not None and plan.release and plan.commit_low == 2 and not plan.records
    assert not s.pinned and write(s, NOW + 100_000) is None
    s.mark_done(s.pop_due(NOW + DAY, 1)[0][0])
    plan = write(s, NOW + 100_001, final=True)  # a stopping timer does not wait
    assert plan is not None and plan.release and plan.commit_low == 3


def test_low_is_committed_as_it_moves_at_most_every_commit_ms() -> None:
    s = loaded([NOW + DAY, NOW + 1, NOW + 1, NOW + DAY, NOW + 2], commit_ms=5_000, snapshot_ms=10**9)
    s.mark_done(0)  # (rolled)
    s.mark_done(2)
    assert (s.low, s.done) == (1, {2})
    assert write(s, NOW) is not None and s.committed_low == 0
    s.mark_done(1)
    s.mark_done(4)
    plan = write(s, NOW + 5_000)
    assert plan is not None and kinds(plan) == "delta" and plan.commit_low == 3 == s.committed_low


def test_progress_records_stay_under_the_chunk_and_a_snapshot_counts_once_whole() -> None:
    s = loaded([NOW + DAY] + [NOW + 1] * 10, chunk=3, snapshot_min=7)
    for offset, _ in s.pop_due(NOW + 1, 7):
        s.mark_done(offset)
    records: list[dict[str, Any]] = []
    plan = write(s, NOW + 1, records)
    assert plan is not None and plan.snapshot
    assert [r["done"] for r in records] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [(r["part"], r["parts"]) for r in records] == [(0, 3), (1, 3), (2, 3)]
    again = TimerState()
    for r in records:
        again.apply(decode_progress(encode_progress(r)))
    assert (again.low, again.done) == (0, {1, 2, 3, 4, 5, 6, 7})
    torn = TimerState()
    torn.apply({"kind": "delta", "low": 0, "done": [9]})
    for r in records[:2]:  # its last part never written: the snapshot is not applied
        torn.apply(r)
    assert torn.done == {9}
    for offset, _ in s.pop_due(NOW + 1, 3):
        s.mark_done(offset)
    records.clear()
    write(s, NOW + 2, records)
    assert [r["done"] for r in records] == [[8, 9, 10]]  # a delta, in parts too
    with pytest.raises(InvalidArgumentError):
        decode_progress(encode_progress({"kind": "snapshot", "low": 0, "done": [], "part": 2, "parts": 2}))


def test_a_rebuild_from_the_committed_low_drops_older_marks() -> None:
    """`low` committed after the last snapshot: the snapshot's marks below it
    are not kept as done."""
    s = TimerState()
    s.apply({"kind": "delta", "low": 5, "done": []})
    s.apply({"kind": "snapshot", "low": 2, "done": [3, 6]})
    assert (s.low, s.done) == (5, {6})


def test_loading_is_in_order_and_skips_what_is_done() -> None:
    s = TimerState()
    s.apply({"kind": "snapshot", "low": 2, "done": [3]})
    assert s.loaded == 2
    with pytest.raises(ValueError):
        s.load(5, NOW, 1)
    assert s.load(2, NOW, 1) and not s.load(3, NOW, 1) and s.load(4, NOW, 1)
    assert set(s.pending) == {2, 4}


def msg(at: int) -> Message:
    return Message("", 0, b"x", deliver_at_ms=at)


def test_what_goes_to_the_timer_and_how_far_ahead() -> None:
    assert not delayed([msg(0), msg(NOW - 5), msg(NOW)], NOW, DAY)  # now or past: stored at once
    assert delayed([msg(0), msg(NOW + 1)], NOW, DAY)  # one later: the whole batch waits
    assert delayed([msg(NOW + DAY)], NOW, DAY)
    with pytest.raises(InvalidArgumentError, match="max_delay_ms"):
        delayed([msg(NOW + 1), msg(NOW + DAY + 1)], NOW, DAY)
    with pytest.raises(InvalidArgumentError):
        delayed([msg(-1)], NOW, DAY)


def test_a_parked_message_comes_out_as_it_was_sent() -> None:
    m = Message("orders", 3, b"body", "tag", "k1 k2", {"a": "1", REAL_TOPIC: "forged"}, 0, NOW - 7, NOW + 5)
    parked = to_timer(m, "orders", 3, NOW)
    assert (parked.topic, parked.queue_id) == (TIMER_TOPIC, WAIT_QUEUE)
    assert parked.properties == {"a": "1", REAL_TOPIC: "orders", REAL_QID: "3", DELIVER_MS: str(NOW + 5)}
    rec = Record(
        TIMER_TOPIC, 0, 0, 0, 0, NOW - 7, NOW, "tag", "k1 k2", dict(parked.properties or {}), b"body"
    )
    topic, queue, out = from_timer(rec)
    assert (topic, queue) == ("orders", 3)
    assert (out.body, out.tags, out.keys, out.born_ms) == (b"body", "tag", "k1 k2", NOW - 7)
    assert out.properties == {"a": "1", DELIVER_MS: str(NOW + 5)}
    assert to_timer(msg(NOW - 1), "t", 0, NOW).properties[DELIVER_MS] == str(NOW - 1)
    assert to_timer(msg(0), "t", 0, NOW).properties[DELIVER_MS] == str(NOW)


@pytest.mark.parametrize(
    ("props", "error"),
    [
        ({REAL_TOPIC: "%SCHEDULE%", REAL_QID: "0", DELIVER_MS: "1"}, InvalidArgumentError),
        ({REAL_TOPIC: "bad topic", REAL_QID: "0", DELIVER_MS: "1"}, InvalidTopicError),
        ({REAL_TOPIC: "t", REAL_QID: "-1", DELIVER_MS: "1"}, InvalidArgumentError),
        ({REAL_TOPIC: "t", REAL_QID: "0", DELIVER_MS: "soon"}, InvalidArgumentError),
        ({REAL_QID: "0", DELIVER_MS: "1"}, InvalidTopicError),
    ],
)
def test_a_record_naming_nowhere_valid_is_refused_for_good(props: dict[str, str], error: type) -> None:
    rec = Record(TIMER_TOPIC, 0, 0, 0, 0, 0, 0, "", "", props, b"x")
    with pytest.raises(error) as info:
        from_timer(rec)
    assert not info.value.retriable


def test_the_cap_refuses_with_a_retriable_error_naming_the_keys() -> None:
    check_room(8, 100, [msg(1), msg(1)], (10, 102))
    with pytest.raises(BrokerBusyError, match="timer_max_pending") as info:
        check_room(9, 0, [msg(1), msg(1)], (10, 1 << 20))
    assert info.value.retriable
    with pytest.raises(BrokerBusyError, match="timer_max_pending_bytes"):
        check_room(0, 100, [msg(1), msg(1), msg(1)], (10, 102))


def test_progress_records_that_are_not_progress_are_refused() -> None:
    bad = [b"", b"[]", b'{"kind":"delta","low":0}', b'{"kind":"x","low":0,"done":[]}']
    bad += [b'{"kind":"delta","low":0,"done":[-1]}', b'{"kind":"delta","low":"0","done":[]}']
    for body in bad:
        with pytest.raises(InvalidArgumentError):
            decode_progress(body)


def test_messages_out_for_delivery_are_never_handed_out_twice() -> None:
    """Rolls leave stale heap entries; compacting the heap while a batch is
    out must not put that batch back in beside its own retries."""
    s = loaded([NOW] * 3 + [NOW + DAY] * 7, roll_slack=0)
    assert [o for o, _ in s.pop_due(NOW, 3)] == [0, 1, 2]
    for rolled in range(3, 10):
        s.mark_done(rolled)  # the heap is compacted here: 7 stale entries, 3 pending
    s.mark_done(0)
    s.retry_at(1, NOW)
    s.retry_at(2, NOW)
    s.retry_at(2, NOW)  # (twice: no second entry)
    assert s.pop_due(NOW, 10) == [(1, NOW), (2, NOW)]
    assert s.pop_due(NOW, 10) == []
