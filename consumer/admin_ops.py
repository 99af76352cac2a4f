"""The operator's commands across a cluster (issue 19), through an `Admin`
(consumer/admin.py): ask every broker (BrokerAdmin, broker.proto), merge
with consumer/admin_view.py. Everything returns plain dicts (JSON-ready):
the `tailrace group | message | topic` commands print them, a console's
`/api` can serve them as they are.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
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
    TailraceError,
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


def down_groups(admin: Admin) -> dict[str, str]:
    """Broker groups the nameservers know (or knew in the last day) with no
    live broker: name -> why. They hold queues and offsets nobody can read
    or change now; an answer without them must say so."""
    if admin.routes is None:
        return {}
    return {
        g.broker_name: "no live broker registered: its queues and offsets are not in this answer"
        for c in admin.routes.clusters().clusters
        for g in c.groups
        if not any(b.alive for b in g.brokers)
    }


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
    "unreachable": broker address or broker group -> why (a group with no
    live broker, or none of whose brokers answered: its queues are missing),
    "complete": nothing unreachable}."""
    answers: dict[str, dict[int, list[dict[str, Any]]]] = {}
    unreachable: dict[str, str] = down_groups(admin)
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
        if name not in answers:
            unreachable[name] = "none of its brokers answered: its queues are not in this answer"
    topics = {row["topic"] for b in answers.values() for rows in b.values() for row in rows}
    read_queues: dict[str, list[MessageQueue]] = {}
    if admin.routes is not None:
        for t in topics:
            try:
                read_queues[t] = admin.routes.get(t).read_queues()
            except TailraceError:
                continue  # no route (being deleted, say): the holder is computed per broker group
    entries = queue_entries(answers, read_queues)
    return {
        "queues": entries,
        "groups": group_summaries(entries),
        "unreachable": unreachable,
        "complete": not unreachable,
    }


def parse_time(text: str) -> int:
    """Epoch ms of an ISO 8601 time, or of RocketMQ mqadmin's
    `yyyy-MM-dd#HH:mm:ss:SSS`. A time without a zone is this machine's
    local time, as every time the CLI prints (LAST_PULL, a message's
    "stored") and as mqadmin and Kafka read one; the plan shows the instant
    it resolved to (`instant`)."""
    mq = re.fullmatch(r"(\d{4}-\d\d-\d\d)#(\d\d:\d\d:\d\d):(\d{3})", text.strip())
    iso = f"{mq.group(1)}T{mq.group(2)}.{mq.group(3)}" if mq else text.strip().replace("Z", "+00:00")
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidArgumentError(
            f"--to-time {text!r} is not an ISO 8601 time (2026-01-31T12:00:00+01:00; no zone: local "
            "time) nor mqadmin's 2026-01-31#12:00:00:000"
        ) from None
    if t.tzinfo is None:
        t = t.astimezone()  # a naive time is local
    return int(t.timestamp() * 1000)


def instant(ms: int) -> dict[str, str]:
    """An epoch-ms time as ISO 8601, in UTC and in local time with its offset."""
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return {
        "utc": at.isoformat(timespec="milliseconds"),
        "local": at.astimezone().isoformat(timespec="milliseconds"),
    }


def reset_offset(
    admin: Admin,
    group: str,
    topic: str,
    target: str,
    offset: int = 0,
    timestamp_ms: int = 0,
    dry_run: bool = False,
    force: bool = False,
    skip_unreachable: bool = False,
) -> dict[str, Any]:
    """Plan the reset on every broker group's master (a dry run each), then
    carry it out group by group. Refused before anything changes when a
    broker group cannot be reached (no live master, or a nameserver knows it
    with no live broker: it may hold the topic) unless `skip_unreachable`,
    and when members are live anywhere unless `force`. A group that fails
    part way does not stop the others; the answer says per group what
    happened: {"plan": rows with "applied", "groups": name -> {"status":
    reset | planned | failed | unreachable, "why"}, "not_reset": names,
    "applied": every group reset, "members", ...}. Running the same command
    again finishes it (each group's plan goes to the same target)."""
    if target not in TARGETS:
        raise InvalidArgumentError(f"reset target must be one of {', '.join(TARGETS)}")
    if offset < 0 or timestamp_ms < 0:
        raise InvalidArgumentError("offsets and times are not negative")
    groups = brokers(admin, topic)
    unreachable = {n: why for n, why in down_groups(admin).items() if n not in groups}
    if not groups and not unreachable:
        raise UnknownTopicError(f"topic {topic!r} has no live broker")

    def request(dry: bool) -> pb.ResetOffsetRequest:
        return pb.ResetOffsetRequest(
            group=group, topic=topic, target=TARGETS[target], offset=offset, timestamp_ms=timestamp_ms,
            dry_run=dry, force=force,
        )  # fmt: skip

    masters: dict[str, str] = {}
    for name, replicas in groups.items():
        if replicas[0][0] != MASTER_ID:
            unreachable[name] = "no live master (a slave takes no reset)"
        else:
            masters[name] = replicas[0][1]
    plans: dict[str, pb.ResetOffsetResponse] = {}
    for name, address in sorted(masters.items()):
        try:
            plans[name] = _stub_call(admin.pool.get(address), "ResetOffset", request(True))
        except BrokerUnavailableError as exc:
            unreachable[name] = str(exc)
    if unreachable and not skip_unreachable and not dry_run:
        raise BrokerUnavailableError(
            f"cannot reach broker group(s) {_why(unreachable)}; they may hold {topic!r}: nothing was reset "
            "(run it again once they are back, or --skip-unreachable to reset the others and leave "
            "their offsets as they are)"
        )
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
    status = {n: {"status": "unreachable", "why": w} for n, w in unreachable.items()}
    for name in sorted(plans):
        if dry_run:
            status[name] = {"status": "planned", "why": ""}
            continue
        try:  # each master checks members and pops again and writes its reset as one batch
            plans[name] = _stub_call(admin.pool.get(masters[name]), "ResetOffset", request(False))
            status[name] = {"status": "reset", "why": ""}
        except TailraceError as exc:
            status[name] = {"status": "failed", "why": str(exc)}
    plan = [
        {
            "broker_name": n,
            **{f.name: getattr(q, f.name) for f in pb.ResetQueue.DESCRIPTOR.fields},
            "applied": status[n]["status"] == "reset",
        }
        for n, r in sorted(plans.items())
        for q in r.queues
    ]
    not_reset = [] if dry_run else sorted(n for n, st in status.items() if st["status"] != "reset")
    return {
        "group": group,
        "topic": topic,
        "target": target,
        **({"instant": instant(timestamp_ms)} if target == "time" else {}),
        "dry_run": dry_run,
        "applied": not dry_run and not not_reset,
        "members": members,
        "last_pop_ms": popping,
        "plan": plan,
        "groups": dict(sorted(status.items())),
        "not_reset": not_reset,
    }


def _why(reasons: dict[str, str]) -> str:
    return "; ".join(f"{n} ({why})" for n, why in sorted(reasons.items()))


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
