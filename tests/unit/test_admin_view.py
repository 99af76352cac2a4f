"""The cluster's view of a group (consumer/admin_view.py), from brokers' rows
as dicts: lag, who holds a queue, where it is read from and why."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.admin_view import group_summaries, holder, lag, queue_entries, serving
from core.route import MessageQueue

pytestmark = pytest.mark.unit


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "group": "G", "topic": "T", "queue_id": 0, "min_offset": 0, "max_offset": 10, "committed": True,
        "committed_offset": 4, "lag_bytes": 600, "lag_bytes_estimated": False, "backlog_bytes": 900,
        "members": [], "lock_holder": "", "last_pull_ms": 0, "suggested_broker_id": -1,
        "suggestion_reason": "", "pop_inflight": 0, "sent_away": False,
    }  # fmt: skip
    return base | kw


def test_lag_counts_from_the_commit_or_from_the_oldest_message() -> None:
    assert lag(row()) == 6
    assert lag(row(committed=False, min_offset=3)) == 7  # never committed: from the first
    assert lag(row(committed_offset=1, min_offset=5)) == 5  # a commit below retention's cut
    assert lag(row(committed_offset=10)) == 0


def test_a_queue_is_read_where_the_newest_answer_sent_its_consumer() -> None:
    assert serving({0: row()})["read_from"] == ""  # no pull seen
    s = serving({0: row(last_pull_ms=5)})
    assert (s["read_from"], s["read_broker_id"], s["reason"], s["last_pull_ms"]) == ("master", 0, "", 5)
    # the master sent it away: the slave it named serves from then on
    away = {0: row(last_pull_ms=5, suggested_broker_id=1, suggestion_reason="backlog_over_budget")}
    s = serving(away)
    assert (s["read_from"], s["read_broker_id"], s["reason"]) == ("slave", 1, "backlog_over_budget")
    s = serving({**away, 1: row(last_pull_ms=9)})  # the slave's newer answer: it serves
    assert (s["read_from"], s["read_broker_id"], s["answered_by"]) == ("slave", 1, 1)
    assert s["reason"] == "backlog_over_budget"  # no advice of its own: why the master sent it there
    assert serving({0: row(last_pull_ms=5), 1: row(last_pull_ms=9)})["reason"] == ""
    s = serving({**away, 1: row(last_pull_ms=9, suggested_broker_id=0, suggestion_reason="caught_up")})
    assert (s["read_from"], s["reason"]) == ("master", "caught_up")  # handed back
    assert "back to the master" in s["why"]


def test_the_holder_is_the_lock_holder_or_the_averaging_allocations_member() -> None:
    qs = [MessageQueue("b", q) for q in range(4)]
    r = row(members=["c2", "c1"])
    assert [holder(r, qs, q) for q in qs] == ["c1", "c1", "c2", "c2"]
    assert holder(r | {"lock_holder": "c9"}, qs, qs[0]) == "c9"
    assert holder(row(), qs, qs[0]) == ""


def test_entries_take_offsets_from_the_master_and_members_from_every_broker() -> None:
    answers = {
        "b": {
            0: [
                row(
                    members=["c1"],
                    last_pull_ms=5,
                    suggested_broker_id=1,
                    suggestion_reason="backlog_over_budget",
                )
            ],
            1: [row(committed_offset=2, members=["c2"], last_pull_ms=7)],
        }
    }
    (e,) = queue_entries(answers, {"T": [MessageQueue("b", 0)]})
    assert (e["queue_id"], e["lag"], e["committed_offset"], e["offsets_from"]) == (0, 6, 4, 0)
    assert (e["members"], e["member"], e["read_from"], e["read_broker_id"]) == (
        ["c1", "c2"],
        "c1",
        "slave",
        1,
    )
    (only_slave,) = queue_entries({"b": {1: answers["b"][1]}}, {})
    assert (only_slave["committed_offset"], only_slave["offsets_from"]) == (2, 1)  # master down: a slave's
    (s,) = group_summaries([e, only_slave])
    assert (s["group"], s["queues"], s["lag"], s["topics"], s["members"]) == ("G", 2, 14, ["T"], ["c1", "c2"])
