"""The receive side of the v2 protocol as plain functions: a popped record
as a v2 `Message`, the filter, the long-poll and invisible times, and the
assignments a push consumer pops from. No sockets, no clock (times are
passed in).

A message read back carries what `SendMessage` stored (translate.py, in
reverse) and what the pop says of this delivery:

| v2 `system_properties` | from |
|---|---|
| `tag`, `keys` | the record's tags; its keys split at spaces |
| `message_id`, `message_group` | properties `UNIQ_KEY`, `__SHARDINGKEY` |
| `born_host`, `trace_context` | properties `BORN_HOST`, `TRACE_CONTEXT` |
| `message_type` | FIFO with a message group, else NORMAL |
| `born_timestamp`, `store_timestamp` | the record's `born_ms`, `store_ms` |
| `store_host` | the master that handed it out |
| `queue_id`, `queue_offset` | the record's |
| `receipt_handle`, `delivery_attempt` | the pop's (attempt 1: the first delivery) |
| `invisible_duration` | the invisibility the pop was given |
| `body_encoding`, `body_digest` | IDENTITY, the CRC32 of the body (upper-case hex, as the clients check it) |

`user_properties` are the record's properties less every reserved name.
"""

from __future__ import annotations

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.record import Record
from core.rocketmq import routes, translate
from core.rocketmq.codes import Refused
from core.rocketmq.settings import ServerSettings
from core.route import TopicRoute

MIN_INVISIBLE_MS = 1_000
MAX_INVISIBLE_MS = 12 * 3600 * 1000  # the brokers' limit (master/popper.py), RocketMQ's too
ALL = "*"
MAX_TAGS_CHARS = 4096
MAX_BATCH = 32  # messages per receive: the official clients' most (a larger ask gets this many)


def message_of(record: Record, attempt: int, handle: str, invisible_ms: int, store_host: str) -> d.Message:
    """A popped record as the v2 message a consumer receives."""
    props = record.properties
    group = props.get(translate.MESSAGE_GROUP, "")
    sp = d.SystemProperties(
        tag=record.tags,
        keys=[k for k in record.keys.split(translate.KEY_SEPARATOR) if k],
        message_id=props.get(translate.MESSAGE_ID, ""),
        body_digest=d.Digest(type=d.CRC32, checksum=translate.digest(record.body, d.CRC32)),
        body_encoding=d.IDENTITY,
        message_type=d.FIFO if group else d.NORMAL,
        born_host=props.get(translate.BORN_HOST, ""),
        store_host=store_host,
        receipt_handle=handle,
        queue_id=record.queue_id,
        queue_offset=record.queue_offset,
        delivery_attempt=attempt,
        message_group=group,
        trace_context=props.get(translate.TRACE_CONTEXT, ""),
    )
    if not group:
        sp.ClearField("message_group")
    if not record.tags:
        sp.ClearField("tag")
    if not sp.trace_context:
        sp.ClearField("trace_context")
    sp.born_timestamp.FromMilliseconds(record.born_ms or record.store_ms)
    sp.store_timestamp.FromMilliseconds(record.store_ms)
    sp.invisible_duration.FromMilliseconds(invisible_ms)
    return d.Message(
        topic=d.Resource(name=record.topic),
        user_properties={k: v for k, v in props.items() if k not in translate.RESERVED},
        system_properties=sp,
        body=record.body,
    )


def tag_expression(fe: d.FilterExpression) -> str:
    """The native tag expression of a v2 filter: "*" for all, else the tags
    joined by "||" (blanks dropped). SQL92 is refused: the brokers filter
    by tag only."""
    if fe.type == d.SQL:
        raise Refused(d.UNSUPPORTED, "SQL92 filter expressions are not supported by Tailrace; filter by TAG")
    text = fe.expression.strip()
    if len(text) > MAX_TAGS_CHARS:
        raise Refused(
            d.ILLEGAL_FILTER_EXPRESSION, f"a tag expression has at most {MAX_TAGS_CHARS} characters"
        )
    tags = [t.strip() for t in text.split("||") if t.strip()]
    if not tags or ALL in tags:
        return ALL
    return "||".join(tags)


def polling_ms(request: s.ReceiveMessageRequest, server: ServerSettings, left_ms: int) -> int:
    """How long to hold a receive with nothing to hand out, as RocketMQ's
    `ReceiveMessageActivity`: the request's `long_polling_timeout` (absent:
    all the time left), clamped to the server's min..max, then to the time
    left before the client's deadline (`left_ms`, a margin taken already).
    Less than the minimum left is ILLEGAL_POLLING_TIME."""
    wanted = (
        request.long_polling_timeout.ToMilliseconds() if request.HasField("long_polling_timeout") else left_ms
    )
    wanted = min(max(wanted, server.min_long_polling_ms), server.long_polling_ms)
    if wanted > left_ms:
        if left_ms < server.min_long_polling_ms:
            raise Refused(
                d.ILLEGAL_POLLING_TIME,
                f"the deadline leaves {max(left_ms, 0)} ms to poll, "
                f"less than the least ({server.min_long_polling_ms} ms)",
            )
        wanted = left_ms
    return wanted


def invisible_ms(request: s.ReceiveMessageRequest, server: ServerSettings) -> int:
    """How long received messages stay invisible: the request's, or for
    `auto_renew` (push consumers, which send none) the proxy's
    `auto_renew_invisible_ms`, then renewed by `core/rocketmq/renew.py`."""
    if request.auto_renew:
        return server.auto_renew_invisible_ms
    if not request.HasField("invisible_duration"):
        raise Refused(d.ILLEGAL_INVISIBLE_TIME, "invisible_duration is required without auto_renew")
    return checked_invisible(request.invisible_duration.ToMilliseconds(), MIN_INVISIBLE_MS)


def checked_invisible(ms: int, least: int = 0) -> int:
    """`ms` if in least..12 h, else ILLEGAL_INVISIBLE_TIME."""
    if not least <= ms <= MAX_INVISIBLE_MS:
        raise Refused(
            d.ILLEGAL_INVISIBLE_TIME,
            f"an invisible duration must be in {least // 1000} s..12 h, not {ms} ms",
        )
    return ms


def assignments(route: TopicRoute, proxy: d.Endpoints) -> list[d.Assignment]:
    """A push consumer's queues, as RocketMQ's proxy assigns a normal group:
    one per readable broker group with a live master, queue id -1 (pop
    from any of its queues), at this proxy's endpoints."""
    topic = d.Resource(name=route.topic)
    return [
        d.Assignment(
            message_queue=d.MessageQueue(
                topic=topic,
                id=-1,
                permission=d.READ_WRITE,
                broker=d.Broker(name=g.broker_name, id=0, endpoints=proxy),
                accept_message_types=routes.ACCEPTED_TYPES,
            )
        )
        for g in sorted(route.groups, key=lambda g: g.broker_name)
        if g.readable and g.master is not None
    ]
