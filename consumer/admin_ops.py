"""The operator's commands across a cluster (issue 19), through an `Admin`
(consumer/admin.py): ask every broker (BrokerAdmin, broker.proto), merge
with consumer/admin_view.py. Everything returns plain dicts (JSON-ready):
the `tailrace group | message | topic` commands print them, a console's
`/api` can serve them as they are.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from consumer.admin import Admin
from consumer.admin_view import group_summaries, queue_entries
from consumer.connection import BrokerConnection
from core.admin.ids import format_id, parse_id
from core.errors import (
    BrokerUnavailableError,
    GroupActiveError,
    InvalidArgumentError,
    MessageNotFoundError,
    PermissionDeniedError,
    TailraceError,
    UnauthenticatedError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.record import decode_record
from core.route import MASTER_ID, BrokerEndpoint, GroupRoute, MessageQueue

T = TypeVar("T")
Brokers = dict[str, list[tuple[int, str]]]  # broker group -> (broker id, address), the master first
TARGETS = {
    "earliest": pb.RESET_EARLIEST,
    "latest": pb.RESET_LATEST,
    "offset": pb.RESET_OFFSET,
    "time": pb.RESET_TIME,
}


def brokers(admin: Admin, topic: str | None = None) -> Brokers:
    """Every live broker of every broker group (routing `topic`, when
    given), the master first; one broker when `admin` talks to one."""
    if admin.routes is None:
        st = admin.status()
        return {st["broker_name"]: [(st["broker_id"], admin.conn.address)]}
    if topic is not None:
        groups = list(admin.routes.get(topic, refresh=True).groups)
    else:
        groups = [g for c in admin.routes.clusters().clusters for g in c.groups]  # type: ignore[misc]
    out: Brokers = {}
    for g in groups:
        live = sorted({(b.broker_id, b.address) for b in g.brokers if b.alive})
        if live:
            out[g.broker_name] = live
    return out


def _first(admin: Admin, replicas: list[tuple[int, str]], call: Callable[[Any], T]) -> T:
    """`call(stub)` on the first replica that answers (the master first)."""
    last: TailraceError = BrokerUnavailableError("no live broker")
    for _bid, address in replicas:
        conn = admin.pool.get(address)
        try:
            return call(conn)
        except BrokerUnavailableError as exc:
            last = exc
    raise last


def _stub_call(conn: BrokerConnection, method: str, request: Any) -> Any:
    return conn.call(getattr(conn.admin_stub, method), request)


def _row(q: pb.GroupQueue) -> dict[str, Any]:
    return {f.name: getattr(q, f.name) for f in pb.GroupQueue.DESCRIPTOR.fields} | {
        "members": list(q.members)
    }


def describe_groups(admin: Admin, group: str = "", topic: str = "") -> dict[str, Any]:
    """{"queues": one entry per (group, topic, broker group, queue) (see
    admin_view.queue_entries), "groups": one summary per group,
    "unreachable": broker address -> why}."""
    answers: dict[str, dict[int, list[dict[str, Any]]]] = {}
    unreachable: dict[str, str] = {}
    for name, replicas in brokers(admin).items():
        for bid, address in replicas:
            try:
                r = _stub_call(
                    admin.pool.get(address),
                    "DescribeGroups",
                    pb.DescribeGroupsRequest(group=group, topic=topic),
                )
            except (BrokerUnavailableError, TailraceError) as exc:
                if not isinstance(exc, BrokerUnavailableError) and not exc.retriable:
                    raise  # refused (permissions, a bad name): the same everywhere
                unreachable[address] = str(exc)
                continue
            answers.setdefault(name, {})[bid] = [_row(q) for q in r.queues]
    topics = {row["topic"] for b in answers.values() for rows in b.values() for row in rows}
    read_queues: dict[str, list[MessageQueue]] = {}
    if admin.routes is not None:
        for t in topics:
            try:
                read_queues[t] = admin.routes.get(t).read_queues()
            except TailraceError:
                continue  # no route (being deleted, say): the holder is computed per broker group
    entries = queue_entries(answers, read_queues)
    return {"queues": entries, "groups": group_summaries(entries), "unreachable": unreachable}


def parse_time(text: str) -> int:
    """Epoch ms of an ISO 8601 time (a time without a zone is UTC)."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"--to-time {text!r} is not an ISO 8601 time (2026-01-31T12:00:00Z)"
        ) from None
    if t.tzinfo is None:
        from datetime import UTC

        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def reset_offset(
    admin: Admin,
    group: str,
    topic: str,
    target: str,
    offset: int = 0,
    timestamp_ms: int = 0,
    dry_run: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Plan the reset on every broker group's master (a dry run each); with
    members alive anywhere and no `force`, refuse before anything changes;
    else carry it out group by group. {"plan": [...], "applied", "members"}."""
    if target not in TARGETS:
        raise InvalidArgumentError(f"reset target must be one of {', '.join(TARGETS)}")
    if offset < 0 or timestamp_ms < 0:
        raise InvalidArgumentError("offsets and times are not negative")
    groups = brokers(admin, topic)
    if not groups:
        raise UnknownTopicError(f"topic {topic!r} has no live broker")

    def request(dry: bool) -> pb.ResetOffsetRequest:
        return pb.ResetOffsetRequest(
            group=group, topic=topic, target=TARGETS[target], offset=offset, timestamp_ms=timestamp_ms,
            dry_run=dry, force=force,
        )  # fmt: skip

    masters = {}
    for name, replicas in groups.items():
        if replicas[0][0] != MASTER_ID:
            raise BrokerUnavailableError(f"broker group {name} has no live master: nothing reset")
        masters[name] = replicas[0][1]
    plans = {n: _stub_call(admin.pool.get(a), "ResetOffset", request(True)) for n, a in masters.items()}
    members = sorted({m for r in plans.values() for m in r.members})
    popping = {n: r.last_pop_ms for n, r in sorted(plans.items()) if r.last_pop_ms}  # pop consumers
    if (members or popping) and not force and not dry_run:
        live = [f"{len(members)} live member(s) on {topic!r} ({', '.join(members)})"] if members else []
        if popping:
            live.append(f"popped from {topic!r} lately (on {', '.join(popping)})")
        raise GroupActiveError(
            f"group {group!r} has {' and '.join(live)}: stop them first, or --force (members may commit "
            "over the reset; pop consumers' messages in flight go stale); nothing was reset"
        )
    if not dry_run:
        plans = {n: _stub_call(admin.pool.get(a), "ResetOffset", request(False)) for n, a in masters.items()}
    plan = [
        {"broker_name": n, **{f.name: getattr(q, f.name) for f in pb.ResetQueue.DESCRIPTOR.fields}}
        for n, r in sorted(plans.items())
        for q in r.queues
    ]
    return {
        "group": group,
        "topic": topic,
        "target": target,
        "applied": not dry_run,
        "members": members,
        "last_pop_ms": popping,
        "plan": plan,
    }


def message_dict(record: bytes, broker_name: str) -> dict[str, Any]:
    rec = decode_record(record)
    try:
        body: dict[str, Any] = {"body": rec.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(rec.body).decode()}
    return {
        "id": format_id(broker_name, rec.physical_offset),
        "broker_name": broker_name,
        "topic": rec.topic,
        "queue_id": rec.queue_id,
        "queue_offset": rec.queue_offset,
        "tags": rec.tags,
        "keys": rec.keys,
        "properties": rec.properties,
        "born_ms": rec.born_ms,
        "store_ms": rec.store_ms,
        "body_bytes": len(rec.body),
        **body,
    }


def get_message(admin: Admin, message_id: str, topic: str | None = None) -> dict[str, Any]:
    """A message by its native id (from the broker group it names: master
    first, then a slave); any other id is a RocketMQ client's, found in
    `topic` by a scan (`find_messages`)."""
    native = parse_id(message_id)
    if native is None:
        if not topic:
            raise InvalidArgumentError(
                f"{message_id!r} is not a native id (<broker>@<16 hex digits>): give --topic to look it up "
                "as a RocketMQ message id"
            )
        found = find_messages(admin, topic, message_id)
        hits = [m for m in found["messages"] if m["properties"].get("UNIQ_KEY") == message_id]
        if not hits:
            raise MessageNotFoundError(
                f"no message of {topic!r} has id {message_id!r} (scanned {found['scanned']})"
            )
        hit: dict[str, Any] = hits[0]
        return hit
    name, phys = native
    replicas = brokers(admin).get(name)
    if not replicas:
        raise MessageNotFoundError(f"no live broker of group {name!r} (the id's first half)")
    r = _first(
        admin, replicas, lambda c: _stub_call(c, "GetMessage", pb.GetMessageRequest(physical_offset=phys))
    )
    return message_dict(r.record, r.broker_name)


def find_messages(
    admin: Admin, topic: str, key: str, max_scan: int = 0, max_messages: int = 0
) -> dict[str, Any]:
    """The newest messages of `topic` with `key` among its keys (or as its
    RocketMQ id), from every broker group; `complete` says whether every
    queue was scanned to its oldest message."""
    request = pb.FindMessagesRequest(topic=topic, key=key, max_scan=max_scan, max_messages=max_messages)
    messages: list[dict[str, Any]] = []
    scanned, complete = 0, True
    for _name, replicas in sorted(brokers(admin, topic).items()):
        r = _first(admin, replicas, lambda c: _stub_call(c, "FindMessages", request))
        messages += [message_dict(rec, r.broker_name) for rec in r.records]
        scanned += r.scanned
        complete = complete and r.complete
    messages.sort(key=lambda m: m["store_ms"], reverse=True)
    return {
        "topic": topic,
        "key": key,
        "scanned": scanned,
        "complete": complete,
        "messages": messages[: max_messages or 32],
    }


def describe_topic(admin: Admin, topic: str) -> dict[str, Any]:
    """Per broker group routing the topic: its brokers (id, address, role),
    each queue's min and max offsets (from the master, else a slave), and the
    groups that consume it with their lag."""
    route_groups: list[tuple[str, list[tuple[int, str]], GroupRoute | None]]
    if admin.routes is None:
        st = admin.status()
        route_groups = [(st["broker_name"], [(st["broker_id"], admin.conn.address)], None)]
    else:
        route = admin.routes.get(topic, refresh=True)
        route_groups = [
            (g.broker_name, sorted({(b.broker_id, b.address) for b in g.brokers if b.alive}), g)
            for g in route.groups
        ]
    out_groups = []
    for name, replicas, g in route_groups:
        endpoints: tuple[BrokerEndpoint, ...] = g.brokers if g is not None else ()
        entry: dict[str, Any] = {
            "broker_name": name,
            "brokers": [
                {
                    "broker_id": b.broker_id,
                    "address": b.address,
                    "role": b.role,
                    "alive": b.alive,
                    "epoch": b.epoch,
                }
                for b in endpoints
            ],
            "read_queues": g.read_queues if g is not None else None,
            "write_queues": g.write_queues if g is not None else None,
            "perm": g.perm if g is not None else None,
        }
        if replicas:
            r = _first(
                admin,
                replicas,
                lambda c: c.call(c.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic)),
            )
            entry["queues"] = [
                {"queue_id": q.queue_id, "min_offset": q.min_offset, "max_offset": q.max_offset}
                for q in r.queues
            ]
            entry["messages"] = sum(q.max_offset - q.min_offset for q in r.queues)
        out_groups.append(entry)
    consumers: list[dict[str, Any]] = describe_groups(admin, topic=topic)["groups"]
    return {"topic": topic, "groups": out_groups, "consumer_groups": consumers}


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
