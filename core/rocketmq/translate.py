"""v2 messages as native ones: what a `SendMessage` stores, and the checks
that refuse it first.

The wire mapping (a v2 `Message` -> one native record):

| v2 | native record |
|---|---|
| `topic.name` | topic (`resource_namespace` must be empty: no namespaces) |
| `body` (`body_encoding` IDENTITY; GZIP is inflated) | body |
| `system_properties.tag` | tags |
| `system_properties.keys[]` | keys, joined by a space (a key with a space reads back split) |
| `system_properties.born_timestamp` | born_ms |
| `system_properties.message_id` | property `UNIQ_KEY` (RocketMQ's name) |
| `system_properties.message_group` (FIFO) | property `__SHARDINGKEY` (RocketMQ's name) |
| `system_properties.delivery_timestamp` (DELAY) | `deliver_at_ms` (the timer), kept as `TIMER_DELIVER_MS` |
| `message_type` TRANSACTION | property `TRAN_MSG=true`: a half message (core/transactions.py) |
| `system_properties.born_host` | property `BORN_HOST` |
| `system_properties.trace_context` | property `TRACE_CONTEXT` |
| `user_properties` | properties, as they are |

User properties may not use the reserved names above nor the broker's own
(`RECONSUME_TIMES`, `ORIGIN_TOPIC`, `REAL_TOPIC`, ...). `body_digest`, when
given, is checked (CRC32, MD5, SHA1) and not stored. Message types: NORMAL,
FIFO, DELAY and TRANSACTION; LITE and PRIORITY are refused with
NOT_IMPLEMENTED before anything is stored.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.retry import DELIVER_AT, ORIGIN_MSG_ID, ORIGIN_TOPIC, REAL_TOPIC, RECONSUME_TIMES
from core.rocketmq.codes import Refused
from core.timer import DELIVER_MS
from core.transactions import RESERVED as TXN_RESERVED
from core.transactions import TRAN_MSG

MESSAGE_ID = "UNIQ_KEY"
MESSAGE_GROUP = "__SHARDINGKEY"
BORN_HOST = "BORN_HOST"
TRACE_CONTEXT = "TRACE_CONTEXT"
KEY_SEPARATOR = " "
# RocketMQ's system property names (MessageConst, its STRING_HASH_SET and the
# transaction/delay ones): a user property may not take them either
_SYSTEM_NAMES = """TRACE_ON MSG_REGION KEYS TAGS WAIT DELAY RETRY_TOPIC REAL_TOPIC REAL_QID TRAN_MSG PGROUP
    MIN_OFFSET MAX_OFFSET BUYER_ID ORIGIN_MESSAGE_ID TRANSFER_FLAG CORRECTION_FLAG MQ2_FLAG
    RECONSUME_TIME UNIQ_KEY EXTEND_UNIQ_INFO MAX_RECONSUME_TIMES CONSUME_START_TIME INNER_NUM
    INNER_BASE DUP_INFO CHECK_IMMUNITY_TIME_IN_SECONDS TRAN_PREPARED_QUEUE_OFFSET __transactionId__
    TRANSACTION_CHECK_TIMES INSTANCE_ID CORRELATION_ID REPLY_TO_CLIENT TTL ARRIVE_TIME
    PUSH_REPLY_TIME CLUSTER MSG_TYPE POP_CK POP_CK_OFFSET 1ST_POP_TIME __SHARDINGKEY
    PROPERTY_FORWARD_QUEUE_ID REDIRECT INNER_MULTI_DISPATCH INNER_MULTI_QUEUE_OFFSET TRACE_CONTEXT
    TIMER_DELAY_SEC TIMER_DELIVER_MS TIMER_ENQUEUE_MS TIMER_DEQUEUE_MS TIMER_ROLL_TIMES TIMER_OUT_MS
    TIMER_DEL_UNIQKEY TIMER_DELAY_LEVEL __BORNHOST BORN_TIMESTAMP __STARTDELIVERTIME"""
ROCKETMQ_SYSTEM = frozenset(_SYSTEM_NAMES.split())
# names a user property may not take: ours above, the broker's retry and transaction bookkeeping,
# RocketMQ's own
RESERVED = ROCKETMQ_SYSTEM | {
    MESSAGE_ID,
    MESSAGE_GROUP,
    BORN_HOST,
    TRACE_CONTEXT,
    RECONSUME_TIMES,
    ORIGIN_TOPIC,
    ORIGIN_MSG_ID,
    REAL_TOPIC,
    DELIVER_AT,
    *TXN_RESERVED,
}
TRANSIENT_PREFIX = "__RMQ.TRANSIENT."  # RocketMQ never stores these: neither do we accept them
MAX_PROPERTY_BYTES = 0xFFFF  # a native record's limit for one property name or value
MAX_PROPERTIES_BYTES = 16 * 1024  # all user properties together (RocketMQ's proxy: 16 KiB)
MAX_ID_CHARS = 128
MAX_GROUP_CHARS = 255
NOT_YET = {
    d.LITE: "lite messages",
    d.PRIORITY: "priority messages",
}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A v2 message as it will be stored: its topic and the native record's
    fields, the client's message id (echoed back), and its FIFO group (""
    for NORMAL)."""

    topic: str
    body: bytes
    tags: str
    keys: str
    properties: dict[str, str]
    born_ms: int
    message_id: str
    group: str
    deliver_at_ms: int = 0  # DELAY: not delivered before (epoch ms)
    transactional: bool = False  # TRANSACTION: a half message, answered with a transaction id


def topic_of(resource: d.Resource) -> str:
    if resource.resource_namespace:
        raise Refused(d.UNSUPPORTED, "resource namespaces are not supported by Tailrace")
    if not resource.name:
        raise Refused(d.ILLEGAL_TOPIC, "the topic name is empty")
    if resource.name.startswith("%"):
        raise Refused(
            d.ILLEGAL_TOPIC, f"topic {resource.name[:100]!r}: names starting with % are the broker's"
        )
    return resource.name


def message_type(sp: d.SystemProperties) -> int:
    """The message's type; an unspecified one is read from its fields."""
    kind = sp.message_type
    if kind == d.MESSAGE_TYPE_UNSPECIFIED:
        kind = d.FIFO if sp.message_group else d.DELAY if sp.HasField("delivery_timestamp") else d.NORMAL
    if kind in NOT_YET:
        raise Refused(d.NOT_IMPLEMENTED, f"{NOT_YET[kind]} are not implemented by this Tailrace proxy yet")
    if kind not in (d.NORMAL, d.FIFO, d.DELAY, d.TRANSACTION):
        raise Refused(d.BAD_REQUEST, f"unknown message type {kind}")
    if kind == d.FIFO and not sp.message_group:
        raise Refused(d.ILLEGAL_MESSAGE_GROUP, "a FIFO message needs a message group")
    if kind != d.FIFO and sp.message_group:
        raise Refused(d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "only a FIFO message has a message group")
    if (kind == d.DELAY) != sp.HasField("delivery_timestamp"):
        raise Refused(
            d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a DELAY message, and only one, has a delivery timestamp"
        )
    return kind


def deliver_at_ms(sp: d.SystemProperties) -> int:
    """A DELAY message's delivery time in epoch ms (0: none). How far ahead
    it may be is the master's to say (broker.max_delay_ms: INVALID_ARGUMENT)."""
    if not sp.HasField("delivery_timestamp"):
        return 0
    ts = sp.delivery_timestamp
    at = ts.seconds * 1000 + ts.nanos // 1_000_000
    if at <= 0 or not 0 <= ts.nanos < 1_000_000_000:
        raise Refused(d.ILLEGAL_DELIVERY_TIME, "the delivery timestamp is not after 1970")
    return at


def body_of(m: d.Message, max_body_bytes: int) -> bytes:
    sp = m.system_properties
    body = m.body
    if sp.body_encoding == d.GZIP:
        body = gunzip(body, max_body_bytes)
    elif sp.body_encoding not in (d.IDENTITY, d.ENCODING_UNSPECIFIED):
        raise Refused(d.BAD_REQUEST, f"unknown body encoding {sp.body_encoding}")
    if not body:
        raise Refused(d.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(body) > max_body_bytes:
        raise Refused(d.MESSAGE_BODY_TOO_LARGE, f"the body exceeds {max_body_bytes} bytes")
    if sp.HasField("body_digest"):
        check_digest(m.body, sp.body_digest)
    return body


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """A GZIP body inflated (RFC 1952: one or more members, each whole);
    `Refused` MESSAGE_CORRUPTED if it is truncated or followed by anything
    but another member, MESSAGE_BODY_TOO_LARGE as soon as it inflates past
    `max_bytes` (a small bomb never grows past the limit in memory)."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise Refused(d.MESSAGE_CORRUPTED, f"the GZIP body does not inflate: {exc}") from None
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise Refused(d.MESSAGE_BODY_TOO_LARGE, f"the body inflates past {max_bytes} bytes")
        if not inflater.eof:
            raise Refused(d.MESSAGE_CORRUPTED, "the GZIP body is truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def digest(body: bytes, kind: int) -> str:
    """A body's digest as the clients write it (upper-case hex)."""
    if kind == d.CRC32:
        return f"{zlib.crc32(body) & 0xFFFFFFFF:08X}"
    if kind == d.MD5:
        return hashlib.md5(body, usedforsecurity=False).hexdigest().upper()
    if kind == d.SHA1:
        return hashlib.sha1(body, usedforsecurity=False).hexdigest().upper()
    raise Refused(d.BAD_REQUEST, f"unknown body digest type {kind}")


def check_digest(wire_body: bytes, dg: d.Digest) -> None:
    """The digest covers the body as sent (before inflating)."""
    if digest(wire_body, dg.type) != dg.checksum.upper():
        raise Refused(d.MESSAGE_CORRUPTED, "the body does not match its digest")


def _text(value: str, what: str, code: int, limit: int = 1024) -> str:
    if not value.strip() or len(value) > limit or any(c in value for c in "\x00\r\n"):
        raise Refused(code, f"{what} {value[:100]!r} is blank, too long or has control characters")
    return value


def user_properties(m: d.Message) -> dict[str, str]:
    props: dict[str, str] = {}
    total = 0
    for key, value in m.user_properties.items():
        if key in RESERVED or not key or key.startswith(("%", TRANSIENT_PREFIX)):
            raise Refused(d.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property name {key[:100]!r} is reserved")
        kb, vb = len(key.encode()), len(value.encode())
        total += kb + vb
        if kb > MAX_PROPERTY_BYTES or vb > MAX_PROPERTY_BYTES or total > MAX_PROPERTIES_BYTES:
            raise Refused(
                d.MESSAGE_PROPERTIES_TOO_LARGE,
                f"user properties exceed {MAX_PROPERTIES_BYTES} bytes (or one is past {MAX_PROPERTY_BYTES})",
            )
        props[key] = value
    return props


def incoming(m: d.Message, max_body_bytes: int, now_ms: int) -> Incoming:
    """The native message a v2 message is stored as; `Refused` if it may not be."""
    topic = topic_of(m.topic)
    sp = m.system_properties
    kind = message_type(sp)
    body = body_of(m, max_body_bytes)
    message_id = _text(sp.message_id, "message id", d.ILLEGAL_MESSAGE_ID, MAX_ID_CHARS)
    tag = ""
    if sp.HasField("tag"):
        tag = _text(sp.tag, "tag", d.ILLEGAL_MESSAGE_TAG)
        if "|" in tag:
            raise Refused(d.ILLEGAL_MESSAGE_TAG, f"tag {tag[:100]!r} contains '|'")
    # a key may hold a space, as in RocketMQ: stored joined by spaces, it reads back split there
    keys = [_text(k, "key", d.ILLEGAL_MESSAGE_KEY) for k in sp.keys]
    props = user_properties(m)
    props[MESSAGE_ID] = message_id
    group = ""
    if kind == d.FIFO:
        group = _text(sp.message_group, "message group", d.ILLEGAL_MESSAGE_GROUP, MAX_GROUP_CHARS)
        props[MESSAGE_GROUP] = group
    if sp.born_host:  # refused, not cut: a stored message is what was sent or nothing
        props[BORN_HOST] = _text(sp.born_host, "born host", d.BAD_REQUEST, 255)
    if sp.trace_context:
        props[TRACE_CONTEXT] = _text(sp.trace_context, "trace context", d.BAD_REQUEST, 1024)
    born = sp.born_timestamp
    born_ms = born.seconds * 1000 + born.nanos // 1_000_000 if sp.HasField("born_timestamp") else now_ms
    if born_ms < 0:
        raise Refused(d.BAD_REQUEST, "the born timestamp is before 1970")
    at = deliver_at_ms(sp)
    txn = kind == d.TRANSACTION
    if txn:
        props[TRAN_MSG] = "true"
    return Incoming(topic, body, tag, KEY_SEPARATOR.join(keys), props, born_ms, message_id, group, at, txn)


def batch(messages: Sequence[d.Message], max_body_bytes: int, now_ms: int) -> list[Incoming]:
    """A request's messages as one native batch (one topic, one queue):
    `Refused` if any one may not be stored, or if they would not go to one
    queue (NORMAL and FIFO mixed, or several message groups: the official
    clients never send so)."""
    out = [incoming(m, max_body_bytes, now_ms) for m in messages]
    if len({m.topic for m in out}) != 1:
        raise Refused(d.BAD_REQUEST, "one topic per request (a request is stored as one batch)")
    if len({m.transactional for m in out}) != 1:
        raise Refused(d.BAD_REQUEST, "TRANSACTION and other messages mixed in one request")
    if len({m.group for m in out}) != 1:
        raise Refused(
            d.BAD_REQUEST, "one message group (or none) per request (a request is stored in one queue)"
        )
    return out


def read_back(tags: str, keys: str, properties: dict[str, str]) -> dict[str, object]:
    """What a v2 client would see of a stored message's system and user
    properties (the reverse mapping; used by the tests and the receive path
    to come)."""
    user = {k: v for k, v in properties.items() if k not in RESERVED}
    return {
        "tag": tags,
        "keys": keys.split(KEY_SEPARATOR) if keys else [],
        "message_id": properties.get(MESSAGE_ID, ""),
        "message_group": properties.get(MESSAGE_GROUP, ""),
        "delivery_timestamp_ms": int(properties.get(DELIVER_MS, "0") or 0),
        "user_properties": user,
    }
