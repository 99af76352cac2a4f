"""v2 messages as native ones: what a `SendMessage` stores, and the checks
that refuse it first.

The wire mapping (a v2 `Message` -> one native record):

| v2 | native record |
|---|---|
| `topic.name` | topic (`resource_namespace` must be empty: no namespaces) |
| `body` (`body_encoding` IDENTITY; GZIP is inflated) | body |
| `system_properties.tag` | tags |
| `system_properties.keys[]` | keys, joined by a space (RocketMQ's key separator) |
| `system_properties.born_timestamp` | born_ms |
| `system_properties.message_id` | property `UNIQ_KEY` (RocketMQ's name) |
| `system_properties.message_group` (FIFO) | property `__SHARDINGKEY` (RocketMQ's name) |
| `system_properties.born_host` | property `BORN_HOST` |
| `system_properties.trace_context` | property `TRACE_CONTEXT` |
| `user_properties` | properties, as they are |

User properties may not use the reserved names above nor the broker's own
(`RECONSUME_TIMES`, `ORIGIN_TOPIC`, `REAL_TOPIC`, ...). `body_digest`, when
given, is checked (CRC32, MD5, SHA1) and not stored. Message types: NORMAL
and FIFO; DELAY, TRANSACTION and the rest are refused with NOT_IMPLEMENTED
before anything is stored.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.retry import ORIGIN_TOPIC, REAL_TOPIC, RECONSUME_TIMES
from core.rocketmq.codes import Refused

MESSAGE_ID = "UNIQ_KEY"
MESSAGE_GROUP = "__SHARDINGKEY"
BORN_HOST = "BORN_HOST"
TRACE_CONTEXT = "TRACE_CONTEXT"
KEY_SEPARATOR = " "
# names a user property may not take: ours above, the broker's retry bookkeeping, RocketMQ's own
RESERVED = frozenset(
    {
        MESSAGE_ID,
        MESSAGE_GROUP,
        BORN_HOST,
        TRACE_CONTEXT,
        RECONSUME_TIMES,
        ORIGIN_TOPIC,
        REAL_TOPIC,
        "TAGS",
        "KEYS",
        "DELAY",
        "RETRY_TOPIC",
        "TRAN_MSG",
        "DELIVER_AT",
        "MAX_OFFSET",
        "MIN_OFFSET",
        "TIMER_DELIVER_MS",
        "TIMER_DELAY_SEC",
    }
)
MAX_ID_CHARS = 128
MAX_GROUP_CHARS = 255
NOT_YET = {
    d.DELAY: "delayed messages",
    d.TRANSACTION: "transactional messages",
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
    if kind not in (d.NORMAL, d.FIFO):
        raise Refused(d.BAD_REQUEST, f"unknown message type {kind}")
    if kind == d.FIFO and not sp.message_group:
        raise Refused(d.ILLEGAL_MESSAGE_GROUP, "a FIFO message needs a message group")
    if kind == d.NORMAL and sp.message_group:
        raise Refused(d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a NORMAL message has no message group")
    if sp.HasField("delivery_timestamp"):
        raise Refused(d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a delivery timestamp makes a DELAY message")
    return kind


def body_of(m: d.Message, max_body_bytes: int) -> bytes:
    sp = m.system_properties
    body = m.body
    if sp.body_encoding == d.GZIP:
        try:
            inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            body = inflater.decompress(body, max_body_bytes + 1)
        except zlib.error as exc:
            raise Refused(d.MESSAGE_CORRUPTED, f"the GZIP body does not inflate: {exc}") from None
    elif sp.body_encoding not in (d.IDENTITY, d.ENCODING_UNSPECIFIED):
        raise Refused(d.BAD_REQUEST, f"unknown body encoding {sp.body_encoding}")
    if not body:
        raise Refused(d.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(body) > max_body_bytes:
        raise Refused(d.MESSAGE_BODY_TOO_LARGE, f"the body exceeds {max_body_bytes} bytes")
    if sp.HasField("body_digest"):
        check_digest(m.body, sp.body_digest)
    return body


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
    keys = [_text(k, "key", d.ILLEGAL_MESSAGE_KEY) for k in sp.keys]
    if any(KEY_SEPARATOR in k for k in keys):
        raise Refused(d.ILLEGAL_MESSAGE_KEY, "a key contains a space (the keys' separator)")
    props: dict[str, str] = {}
    for key, value in m.user_properties.items():
        if key in RESERVED or not key or key.startswith("%"):
            raise Refused(d.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property name {key[:100]!r} is reserved")
        props[key] = value
    props[MESSAGE_ID] = message_id
    group = ""
    if kind == d.FIFO:
        group = _text(sp.message_group, "message group", d.ILLEGAL_MESSAGE_GROUP, MAX_GROUP_CHARS)
        props[MESSAGE_GROUP] = group
    if sp.born_host:
        props[BORN_HOST] = sp.born_host[:255]
    if sp.trace_context:
        props[TRACE_CONTEXT] = sp.trace_context[:1024]
    born = sp.born_timestamp
    born_ms = born.seconds * 1000 + born.nanos // 1_000_000 if sp.HasField("born_timestamp") else now_ms
    if born_ms < 0:
        raise Refused(d.BAD_REQUEST, "the born timestamp is before 1970")
    return Incoming(topic, body, tag, KEY_SEPARATOR.join(keys), props, born_ms, message_id, group)


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
        "user_properties": user,
    }
