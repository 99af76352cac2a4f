"""The cluster's view of consumer groups, merged from every broker's answer
(BrokerAdmin.DescribeGroups): plain functions of dicts, no sockets, so the
`tailrace group` commands and a web console's `/api` serve the same data.

Per queue of a group: the master's offsets (the authority: slaves only
replicate them), the lag in messages and bytes, the member holding it, and
where its consumer reads from and why. The last comes from the newest pull
any broker of the queue's group answered (each remembers its last one,
core/admin/reads.py): the broker that answered serves the queue, unless
that answer pointed elsewhere (the redirect advice, core/redirect.py), in
which case the consumer's next pulls go to the broker it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.route import MASTER_ID, MessageQueue, allocate_average

Row = dict[str, Any]  # one GroupQueue of broker.proto, as a dict

# what each advice reason means for an operator
REASONS = {
    "": "no advice: the broker that answered keeps serving",
    "backlog_over_budget": "its backlog is over the master's page-cache budget: cold reads go to a slave",
    "caught_up": "the backlog is small again: back to the master",
    "no_slave_available": "cold, but no slave is connected and in sync: the master serves",
    "replica_behind": "cold, but no in-sync slave holds the next record yet: the master serves",
    "slave_end": "the consumer reached the slave's end: back to the master",
    "retry_elsewhere": "the slave does not hold the offset yet: back to the master",
}


def lag(row: Row) -> int:
    """Messages the group has not consumed: from its committed offset, or
    from the queue's oldest message when it never committed (a group with no
    committed offset starts from the first message, docs/design.md)."""
    lo, hi = int(row["min_offset"]), int(row["max_offset"])
    start = int(row["committed_offset"]) if row["committed"] else lo
    return max(0, hi - max(start, lo))


def serving(rows: Mapping[int, Row]) -> dict[str, Any]:
    """Where a queue is read from, given each broker's row for it (broker id
    -> row; 0 is the master): `read_from` ("master", "slave", or "" when no
    broker saw a pull since it started), the broker id, the advice reason
    and what that reason means."""
    pulled = [(r["last_pull_ms"], bid, r) for bid, r in rows.items() if r["last_pull_ms"]]
    if not pulled:
        return {
            "read_from": "",
            "read_broker_id": -1,
            "reason": "",
            "why": "no pull seen",
            "last_pull_ms": 0,
            "answered_by": -1,
        }
    at, answered_by, r = max(pulled, key=lambda p: (p[0], -p[1]))
    suggested = r["suggested_broker_id"]
    broker = suggested if suggested >= 0 else answered_by
    reason = r["suggestion_reason"]
    sent = rows.get(MASTER_ID)
    if broker != MASTER_ID and not reason and sent is not None and sent["suggested_broker_id"] > MASTER_ID:
        reason = sent["suggestion_reason"]  # a slave serving without advice: why the master sent it there
    return {
        "read_from": "master" if broker == MASTER_ID else "slave",
        "read_broker_id": broker,
        "reason": reason,
        "why": REASONS.get(reason, reason),
        "last_pull_ms": at,
        "answered_by": answered_by,
    }


def holder(row: Row, queues: Sequence[MessageQueue], queue: MessageQueue) -> str:
    """The member holding a queue: the holder of its lock (orderly
    consumption), else the one the averaging allocation every member
    computes gives it ("" when the group has no live member)."""
    if row.get("lock_holder"):
        return str(row["lock_holder"])
    for member in row.get("members", []):
        if queue in allocate_average(list(queues), list(row["members"]), member):
            return str(member)
    return ""


def queue_entries(
    answers: Mapping[str, Mapping[int, Sequence[Row]]], read_queues: Mapping[str, Sequence[MessageQueue]]
) -> list[dict[str, Any]]:
    """One entry per (group, topic, broker group, queue): `answers` is broker
    group -> broker id -> that broker's rows; `read_queues` topic -> the
    queues its consumers divide (every broker group's). The master's row
    (id 0) gives the offsets, else the first broker's that answered."""
    by_queue: dict[tuple[str, str, str, int], dict[int, Row]] = {}
    for broker_name, brokers in answers.items():
        for bid, answered in brokers.items():
            for r in answered:
                by_queue.setdefault((r["group"], r["topic"], broker_name, r["queue_id"]), {})[bid] = r
    out = []
    for (group, topic, broker_name, queue_id), rows in sorted(by_queue.items()):
        main = rows.get(MASTER_ID) or rows[min(rows)]
        members = sorted({m for r in rows.values() for m in r["members"]})
        mq = MessageQueue(broker_name, queue_id)
        queues = read_queues.get(topic) or [mq]
        out.append(
            {
                "group": group,
                "topic": topic,
                "broker_name": broker_name,
                "queue_id": queue_id,
                "min_offset": main["min_offset"],
                "max_offset": main["max_offset"],
                "committed_offset": main["committed_offset"] if main["committed"] else None,
                "lag": lag(main),
                "lag_bytes": main["lag_bytes"],
                "lag_bytes_estimated": main["lag_bytes_estimated"],
                "backlog_bytes": main["backlog_bytes"],
                "member": holder({**main, "members": members}, queues, mq),
                "members": members,
                "pop_inflight": main["pop_inflight"],
                "sent_away": main["sent_away"],
                "offsets_from": MASTER_ID if MASTER_ID in rows else min(rows),
                **serving(rows),
            }
        )
    return out


def group_summaries(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per group: its topics, queues, total lag, members, pops in flight."""
    groups: dict[str, dict[str, Any]] = {}
    for e in entries:
        g = groups.setdefault(
            e["group"],
            {"group": e["group"], "topics": set(), "queues": 0, "lag": 0, "lag_bytes": 0, "members": set()},
        )
        g["topics"].add(e["topic"])
        g["queues"] += 1
        g["lag"] += e["lag"]
        g["lag_bytes"] += e["lag_bytes"]
        g["members"].update(e["members"])
        g["pop_inflight"] = g.get("pop_inflight", 0) + e["pop_inflight"]
    return [
        {**g, "topics": sorted(g["topics"]), "members": sorted(g["members"])}
        for _name, g in sorted(groups.items())
    ]
