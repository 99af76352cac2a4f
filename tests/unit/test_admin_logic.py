"""The admin commands' broker-side decisions as plain functions (core/admin):
lag bytes from sampled entries, reset plans, the time search, ids, key
matches and the last-read log."""

from __future__ import annotations

import pytest

from core.admin.groups import span_bytes
from core.admin.ids import format_id, parse_id
from core.admin.lookup import matches
from core.admin.reads import ReadLog
from core.admin.reset import QueueSpan, Target, first_at_or_after, plan_reset
from core.errors import InvalidArgumentError
from core.record import Record
from core.redirect import Advice, RedirectReason

pytestmark = pytest.mark.unit

SPANS = [QueueSpan(0, 10, 50, 20), QueueSpan(1, 0, 5, None)]


def test_lag_bytes_are_exact_within_the_scan_and_extrapolated_past_it() -> None:
    assert span_bytes([100, 200], 2) == (300, False)
    assert span_bytes([100, 200], 10) == (1500, True)
    assert span_bytes([], 0) == (0, False)


@pytest.mark.parametrize(
    ("target", "offset", "expected"),
    [
        (Target.EARLIEST, 0, [10, 0]),
        (Target.LATEST, 0, [50, 5]),
        (Target.OFFSET, 30, [30, 5]),  # held to each queue's [min, end]
        (Target.OFFSET, 3, [10, 3]),
    ],
)
def test_a_reset_plan_moves_each_queue_within_its_range(
    target: Target, offset: int, expected: list[int]
) -> None:
    plan = plan_reset(SPANS, target, offset)
    assert [r["new_offset"] for r in plan] == expected
    assert [(r["committed"], r["old_offset"]) for r in plan] == [(True, 20), (False, 0)]


def test_a_reset_to_a_time_takes_each_queues_offset_at_that_time() -> None:
    assert [r["new_offset"] for r in plan_reset(SPANS, Target.TIME, at_time={0: 42, 1: 5})] == [42, 5]
    with pytest.raises(InvalidArgumentError):
        plan_reset(SPANS, Target.TIME)


def test_the_time_search_finds_the_first_record_stored_at_or_after() -> None:
    times = {10: 100, 11: 200, 12: 200, 13: 300}
    assert first_at_or_after(10, 14, times.get, 200) == 11
    assert first_at_or_after(10, 14, times.get, 50) == 10
    assert first_at_or_after(10, 14, times.get, 301) == 14  # none: the end
    gone = {10: None, 11: None, 12: 250, 13: 300}  # removed under the search: older
    assert first_at_or_after(10, 14, gone.get, 0) == 12


def test_native_ids_round_trip_and_anything_else_is_not_one() -> None:
    assert parse_id(format_id("broker-a", 4096)) == ("broker-a", 4096)
    assert parse_id("name@with@at@" + "0" * 16) == ("name@with@at", 0)
    for other in ("", "7F0000011F9018B4AAC20BCD5C1B0000", "b@123", "b@zzzzzzzzzzzzzzzz", "@" + "0" * 16):
        assert parse_id(other) is None, other


def test_a_key_matches_one_of_the_keys_or_the_rocketmq_message_id() -> None:
    rec = Record("T", 0, 0, 0, 0, 0, 0, "", "order-1 order-2", {"UNIQ_KEY": "ABC"}, b"")
    assert matches(rec, "order-2") and matches(rec, "ABC")
    assert not matches(rec, "order") and not matches(rec, "1 order")


def test_the_read_log_keeps_the_last_answer_and_forgets_the_stalest() -> None:
    reads = ReadLog(max_keys=2)
    reads.note(("G", "T", 0), Advice(1, RedirectReason.OVER_BUDGET, True), 10)
    reads.note(("G", "T", 1), Advice(-1, RedirectReason.NONE, False), 20)
    reads.note(("G", "T", 0), Advice(-1, RedirectReason.CAUGHT_UP, False), 30)  # now the newest
    reads.note(("G", "T", 2), Advice(-1, RedirectReason.NONE, False), 40)
    assert sorted(reads.keys()) == [("G", "T", 0), ("G", "T", 2)]
    last = reads.get(("G", "T", 0))
    assert last is not None and (last.at_ms, last.suggested_broker_id, last.reason) == (30, -1, "caught_up")
    reads.forget_topic("T")
    assert reads.keys() == []
