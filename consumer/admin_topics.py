"""`tailrace topic delete` across a cluster (issue 19): a dry run on every
broker group's master first (a refusal stops it before anything changes),
then the deletion on each, then a bounded wait until no nameserver routes
the topic to a group that deleted it. Plain dicts, as consumer/admin_ops.py.
"""

from __future__ import annotations

import time
from typing import Any

from consumer.admin import Admin
from consumer.admin_ops import _stub_call, brokers
from core.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    PermissionDeniedError,
    TailraceError,
    UnauthenticatedError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MASTER_ID


def _refused(exc: TailraceError) -> bool:
    """A refusal every master gives alike (a broker's own topic, a retry topic
    without force, no admin account): raised, not reported per group."""
    return isinstance(exc, (InvalidArgumentError, UnauthenticatedError, PermissionDeniedError))


def _deleted_row(
    name: str, outcome: str, r: pb.DeleteTopicResponse | None, error: str = ""
) -> dict[str, Any]:
    row: dict[str, Any] = {"broker_name": name, "outcome": outcome, "error": error}
    if r is not None:
        row |= {
            "queues": [{"queue_id": q.queue_id, "min_offset": q.min_offset, "max_offset": q.max_offset}
                       for q in r.queues],
            "messages": r.messages,
            "offsets": [{"group": o.group, "queue_id": o.queue_id, "offset": o.offset} for o in r.offsets],
            "consumer_groups": list(r.groups),
            "pop_inflight": r.pop_inflight,
        }  # fmt: skip
    return row


def delete_topic(
    admin: Admin, topic: str, dry_run: bool = False, force: bool = False, route_timeout_s: float = 30.0
) -> dict[str, Any]:
    """Delete `topic` on every broker group's master (BrokerAdmin.DeleteTopic),
    then wait up to `route_timeout_s` until no nameserver routes it to a group
    that deleted it. Every master is asked for a dry run first: a refusal is
    the same everywhere and raised before anything is deleted; a topic no
    group has is UNKNOWN_TOPIC. Per group, `outcome`: deleted, would_delete
    (dry run), absent (not there), failed (`error`: no live master, not
    answering, a timeout...; the others are deleted all the same). `ok`: no
    group failed and the routes dropped it."""
    rows: dict[str, dict[str, Any]] = {}
    masters: dict[str, str] = {}
    groups = brokers(admin)
    if not groups:
        raise BrokerUnavailableError("no live broker is registered with the nameservers: nothing deleted")
    for name, replicas in sorted(groups.items()):
        if replicas[0][0] == MASTER_ID:
            masters[name] = replicas[0][1]
        else:
            rows[name] = _deleted_row(name, "failed", None, "no live master: not deleted")

    def ask(name: str, dry: bool) -> pb.DeleteTopicResponse:
        request = pb.DeleteTopicRequest(topic=topic, dry_run=dry, force=force)
        return _stub_call(admin.pool.get(masters[name]), "DeleteTopic", request)  # type: ignore[no-any-return]

    plans: dict[str, pb.DeleteTopicResponse] = {}
    for name in masters:
        try:
            plans[name] = ask(name, True)
        except UnknownTopicError:
            rows[name] = _deleted_row(name, "absent", None)
        except TailraceError as exc:
            if _refused(exc):
                raise
            rows[name] = _deleted_row(name, "failed", None, f"{exc.code}: {exc.message}: not deleted")
    if not plans and rows and all(r["outcome"] == "absent" for r in rows.values()):
        raise UnknownTopicError(f"topic {topic!r} exists on no broker group ({', '.join(sorted(rows))})")
    for name, plan in plans.items():
        if dry_run:
            rows[name] = _deleted_row(name, "would_delete", plan)
            continue
        try:
            rows[name] = _deleted_row(name, "deleted", ask(name, False))
        except UnknownTopicError:
            rows[name] = _deleted_row(name, "absent", plan, "deleted meanwhile by another command")
        except TailraceError as exc:
            rows[name] = _deleted_row(name, "failed", plan, f"{exc.code}: {exc.message}")
    deleted = sorted(n for n, r in rows.items() if r["outcome"] == "deleted")
    dropped: bool | None = None
    gaps: list[str] = []
    if deleted and admin.routes is not None:
        gaps = wait_unrouted(admin, topic, deleted, route_timeout_s)
        dropped = not gaps
    failed = any(r["outcome"] == "failed" for r in rows.values())
    return {
        "topic": topic,
        "dry_run": dry_run,
        "groups": [rows[n] for n in sorted(rows)],
        "routes_dropped": dropped,
        "route_gaps": gaps,
        "ok": not failed and dropped is not False,
    }


def routed_to(answers: dict[str, Any], groups: list[str]) -> list[str]:
    """Which nameserver (of `answers`: address -> its TopicRoute or None)
    still routes the topic to which of `groups`; [] when none does."""
    out = []
    for address, route in sorted(answers.items()):
        left = [g for g in groups if route is not None and route.group(g) is not None]
        if left:
            out.append(f"nameserver {address} still routes it to {', '.join(left)}")
    return out


def wait_unrouted(admin: Admin, topic: str, groups: list[str], timeout_s: float) -> list[str]:
    """Wait until no nameserver routes `topic` to any of `groups` (their
    brokers re-register without it); what still does at `timeout_s` ([]: none)."""
    assert admin.routes is not None
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while gaps := routed_to(admin.routes.routes_by_nameserver(topic), groups):
        left = deadline - time.monotonic()
        if left <= 0:
            return gaps
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)
    return []
