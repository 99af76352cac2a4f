"""The drill checker finds each kind of violation in hand-made logs, and
passes a clean run (including at-least-once redelivery above a commit)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.drill_check import check, send_stall

pytestmark = pytest.mark.unit


def sent(
    seq: int, queue: int, offset: int, epoch: int = 1, address: str = "m1", status: str = "SEND_OK"
) -> dict[str, Any]:
    return {"seq": seq, "queue": queue, "offset": offset, "epoch": epoch, "address": address,
            "status": status, "broker": "g"}  # fmt: skip


def got(seq: int, queue: int, offset: int) -> dict[str, Any]:
    return {"seq": seq, "queue": queue, "offset": offset, "broker": "g"}


def commit(queue: int, offset: int) -> dict[str, Any]:
    return {"commit": offset, "queue": queue, "broker": "g"}


def test_clean_run_with_redelivery_above_the_commit() -> None:
    produced = [sent(i, 0, i) for i in range(4)] + [sent(9, 0, 4, status="SLAVE_NOT_AVAILABLE")]
    consumed = [got(0, 0, 0), got(1, 0, 1), commit(0, 2), got(2, 0, 2), got(2, 0, 2), got(3, 0, 3)]
    r = check(produced, consumed)
    assert r["violations"] == []
    assert (r["acknowledged"], r["consumed"], r["lost"], r["duplicated"]) == (4, 4, 0, 1)


def test_lost_message_is_reported() -> None:
    r = check([sent(0, 0, 0), sent(1, 0, 1)], [got(0, 0, 0)])
    assert r["lost"] == 1 and r["lost_sample"] == [1]
    assert any("lost 1" in v for v in r["violations"])


def test_diverged_slot_is_misplaced_and_a_conflict() -> None:
    # seq 1 acknowledged at offset 1, but a new master put seq 7 there
    r = check([sent(0, 0, 0), sent(1, 0, 1)], [got(0, 0, 0), got(7, 0, 1), got(1, 0, 1)])
    assert r["misplaced"] == 1 and r["conflicts"] == 1


def test_rewind_below_commit_and_gaps() -> None:
    produced = [sent(i, 0, i) for i in range(6)]
    consumed = [got(0, 0, 0), got(1, 0, 1), got(2, 0, 2), commit(0, 3), got(1, 0, 1), got(2, 0, 2),
                got(5, 0, 5), got(3, 0, 3), got(4, 0, 4)]  # fmt: skip
    r = check(produced, consumed)
    assert r["rewinds_below_commit"] == 1  # offset 1 again after committing 3
    assert r["gaps"] == 1  # 3 and 4 skipped when 5 came
    assert r["lost"] == 0


def test_two_masters_acknowledging_in_one_epoch() -> None:
    produced = [sent(0, 0, 0, epoch=2, address="m1"), sent(1, 0, 1, epoch=2, address="m2")]
    r = check(produced, [got(0, 0, 0), got(1, 0, 1)])
    assert r["masters_per_epoch"] == {"g/2": ["m1", "m2"]}
    assert any("epoch g/2 acknowledged by" in v for v in r["violations"])


def acked(t: float, sent_at: float | None = None, status: str = "SEND_OK") -> dict[str, Any]:
    line: dict[str, Any] = {"seq": 0, "status": status, "t": t}
    if sent_at is not None:
        line["sent"] = sent_at
    return line


def test_send_stall_is_the_longest_gap_reaching_into_the_window() -> None:
    """The gap that spans the fault counts, gaps wholly before or after the
    window do not, failed sends are no acknowledgements."""
    log = [acked(t) for t in (0.0, 0.1, 5.0, 5.1, 5.2, 6.8, 6.9, 8.2, 20.0)]
    log.append(acked(3.0, status="MASTER_LEASE_EXPIRED"))
    assert send_stall(log, start=4.0, end=8.0)["max_send_stall_s"] == 4.9  # 0.1 -> 5.0
    assert send_stall(log, start=5.05, end=7.0)["max_send_stall_s"] == 1.6  # 5.2 -> 6.8
    assert send_stall(log, start=5.05, end=6.85)["max_send_stall_s"] == 1.6
    assert send_stall(log, start=8.1, end=9.0)["max_send_stall_s"] == 11.8  # a stall running past the window
    assert send_stall(log, start=21.0, end=30.0)["max_send_stall_s"] is None  # nothing acknowledged after


def test_ack_wait_needs_the_send_time() -> None:
    log = [acked(1.0, 0.9), acked(2.5, 1.0), acked(3.0)]  # the last from a log without `sent`
    r = send_stall(log, start=0.0, end=10.0)
    assert r["max_ack_wait_s"] == 1.5 and r["max_send_stall_s"] == 1.5
