"""The drill checker finds each kind of violation in hand-made logs, and
passes a clean run (including at-least-once redelivery above a commit)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.drill_check import check

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
