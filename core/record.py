"""The CommitLog record format: encoding (broker) and decoding (clients).

Big-endian. A record is a fixed 65-byte header followed by five variable
parts whose lengths are all in the header, so a reader can bounds-check a
record from its first 65 bytes::

    off size field
      0  u32 total_size        whole record, this field included
      4  u32 magic             RECORD_MAGIC ("TRL1"); BLANK_MAGIC marks a segment's end
      8  u32 crc               CRC32 of bytes [12, total_size): header rest + body
     12  u32 queue_id
     16  u32 flags
     20  u64 queue_offset      position in the (topic, queue) ConsumeQueue
     28  u64 physical_offset   position of this record in the CommitLog
     36  u64 born_ms           producer timestamp
     44  u64 store_ms          broker timestamp
     52  u32 body_len
     56  u8  topic_len         1..127
     57  u16 tags_len
     59  u16 keys_len
     61  u32 props_len
     65  topic | tags | keys | props | body

`total_size` must equal 65 + the five lengths. Properties are a sequence of
(u16 key length, key, u16 value length, value), UTF-8.

Bytes 56 up to the body (the "meta" block: four lengths, topic, tags, keys,
properties) depend only on the message's routing fields, so the append path
encodes them once per (topic, tags) and copies them in as one piece.

This module is what clients import to decode pulled bytes; it must not import
the store.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, overload

from core.errors import CorruptRecordError, InvalidTopicError

RECORD_MAGIC = 0x54524C31  # "TRL1"
BLANK_MAGIC = 0x54524C45  # "TRLE": end-of-segment marker, total_size = bytes to segment end
HEADER = struct.Struct(">IIIIIQQQQIBHHI")
HEADER_SIZE = HEADER.size  # 65
FIXED = struct.Struct(">IIIIIQQQQI")  # the first 56 bytes, up to body_len
META_LENGTHS = struct.Struct(">BHHI")  # topic, tags, keys, props lengths
PREFIX = struct.Struct(">II")  # total_size, magic
CRC = struct.Struct(">I")
CRC_START = 12
BLANK_MIN = PREFIX.size  # a segment always keeps room for an end marker

MAX_TOPIC_LEN = 127
# System records (topic definitions, consumer offsets) travel in the log like
# messages, so slaves learn them by replication and recovery replays them.
SYSTEM_TOPIC = "__sys"
SYSTEM_FLAG = 0x8000_0000
_TOPIC_RE = re.compile(r"[A-Za-z0-9_.%\-]{1,127}")
_U16 = struct.Struct(">H")


def validate_topic(topic: str) -> bytes:
    """Check a topic name and return its UTF-8 bytes.

    Names are `[A-Za-z0-9_.%-]{1,127}` (a leading `%` marks the broker's
    retry, dead-letter and schedule topics, core/retry.py); names made only of
    dots are refused too, because topics become directory names.
    """
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
        raise InvalidTopicError(f"topic name {topic!r} must match [A-Za-z0-9_.%-]{{1,{MAX_TOPIC_LEN}}}")
    if topic.strip(".") == "":
        raise InvalidTopicError(f"topic name {topic!r} cannot be only dots")
    if topic.startswith("__"):
        raise InvalidTopicError(f"topic name {topic!r}: names starting with '__' are reserved")
    return topic.encode("ascii")


@functools.lru_cache(maxsize=8192)
def tag_hash(tags: str) -> int:
    """Stable 64-bit hash of a tag string for ConsumeQueue filtering (0 = no tags)."""
    if not tags:
        return 0
    return int.from_bytes(hashlib.blake2b(tags.encode("utf-8"), digest_size=8).digest(), "big")


def encode_meta(topic_b: bytes, tags_b: bytes, keys_b: bytes, props_b: bytes) -> bytes:
    """Bytes 56.. of a record up to its body (see the layout above)."""
    return (
        META_LENGTHS.pack(len(topic_b), len(tags_b), len(keys_b), len(props_b))
        + topic_b
        + tags_b
        + keys_b
        + props_b
    )


def encode_properties(props: Mapping[str, str] | None) -> bytes:
    if not props:
        return b""
    parts: list[bytes] = []
    for k, v in props.items():
        kb = str(k).encode("utf-8")
        vb = str(v).encode("utf-8")
        if len(kb) > 0xFFFF or len(vb) > 0xFFFF:
            raise ValueError("property key or value longer than 65535 bytes")
        parts += (_U16.pack(len(kb)), kb, _U16.pack(len(vb)), vb)
    return b"".join(parts)


def decode_properties(buf: bytes | memoryview) -> dict[str, str]:
    out: dict[str, str] = {}
    pos, end = 0, len(buf)
    while pos < end:
        if pos + 2 > end:
            raise CorruptRecordError("truncated property key length")
        (kl,) = _U16.unpack_from(buf, pos)
        pos += 2
        if pos + kl + 2 > end:
            raise CorruptRecordError("truncated property key")
        k = bytes(buf[pos : pos + kl]).decode("utf-8")
        pos += kl
        (vl,) = _U16.unpack_from(buf, pos)
        pos += 2
        if pos + vl > end:
            raise CorruptRecordError("truncated property value")
        out[k] = bytes(buf[pos : pos + vl]).decode("utf-8")
        pos += vl
    return out


@dataclass(slots=True)
class Message:
    """What a producer hands the store."""

    topic: str
    queue_id: int
    body: bytes
    tags: str = ""
    keys: str = ""
    properties: Mapping[str, str] | None = None
    flags: int = 0
    born_ms: int = 0


@dataclass(slots=True)
class Record:
    """A decoded stored record."""

    topic: str
    queue_id: int
    queue_offset: int
    physical_offset: int
    flags: int
    born_ms: int
    store_ms: int
    tags: str
    keys: str
    properties: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    size: int = 0


@dataclass(slots=True, frozen=True)
class RecordHeader:
    """The fields a dispatcher or scanner needs, without copying the body."""

    size: int
    queue_id: int
    queue_offset: int
    physical_offset: int
    store_ms: int
    topic: str
    tags: str


_TOPIC_CACHE: dict[bytes, str] = {}


def check_record(buf: bytes | memoryview | bytearray, pos: int, limit: int) -> RecordHeader:
    """Validate the record at `buf[pos:]` that must end by `limit`.

    Checks magic, every size against the bounds, and the CRC; raises
    CorruptRecordError naming what failed. Never trusts a size it has not
    bounds-checked.
    """
    if pos + HEADER_SIZE > limit:
        raise CorruptRecordError(f"header at {pos} runs past {limit}")
    (
        total,
        magic,
        crc,
        queue_id,
        _flags,
        queue_offset,
        physical_offset,
        _born,
        store_ms,
        bl,
        tl,
        gl,
        kl,
        pl,
    ) = HEADER.unpack_from(buf, pos)
    if magic != RECORD_MAGIC:
        raise CorruptRecordError(f"bad magic {magic:#x} at {pos}")
    if total != HEADER_SIZE + tl + gl + kl + pl + bl:
        raise CorruptRecordError(f"size {total} at {pos} disagrees with field lengths")
    if pos + total > limit:
        raise CorruptRecordError(f"record of {total} bytes at {pos} runs past {limit}")
    if tl == 0 or tl > MAX_TOPIC_LEN:
        raise CorruptRecordError(f"topic length {tl} at {pos}")
    mv = memoryview(buf)
    actual = zlib.crc32(mv[pos + CRC_START : pos + total])
    if actual != crc:
        raise CorruptRecordError(f"crc mismatch at {pos}: stored {crc:#x}, computed {actual:#x}")
    p = pos + HEADER_SIZE
    tb = bytes(mv[p : p + tl])
    topic = _TOPIC_CACHE.get(tb)
    if topic is None:
        try:
            topic = tb.decode("ascii")
        except UnicodeDecodeError as exc:
            raise CorruptRecordError(f"topic bytes at {pos} are not ascii") from exc
        if len(_TOPIC_CACHE) < 65536:
            _TOPIC_CACHE[tb] = topic
    tags = bytes(mv[p + tl : p + tl + gl]).decode("utf-8", "replace") if gl else ""
    return RecordHeader(total, queue_id, queue_offset, physical_offset, store_ms, topic, tags)


def decode_record(buf: bytes | memoryview | bytearray, pos: int = 0, verify: bool = True) -> Record:
    """Decode the record at `buf[pos:]`; with `verify`, check it first."""
    limit = len(buf)
    if verify:
        check_record(buf, pos, limit)
    elif pos + HEADER_SIZE > limit:
        raise CorruptRecordError(f"header at {pos} runs past {limit}")
    (
        total,
        magic,
        _crc,
        queue_id,
        flags,
        queue_offset,
        physical_offset,
        born,
        store_ms,
        bl,
        tl,
        gl,
        kl,
        pl,
    ) = HEADER.unpack_from(buf, pos)
    if magic != RECORD_MAGIC or pos + total > limit:
        raise CorruptRecordError(f"no record at {pos}")
    mv = memoryview(buf)
    p = pos + HEADER_SIZE
    topic = bytes(mv[p : p + tl]).decode("ascii")
    p += tl
    tags = bytes(mv[p : p + gl]).decode("utf-8")
    p += gl
    keys = bytes(mv[p : p + kl]).decode("utf-8")
    p += kl
    props = decode_properties(mv[p : p + pl])
    p += pl
    body = bytes(mv[p : p + bl])
    return Record(
        topic=topic,
        queue_id=queue_id,
        queue_offset=queue_offset,
        physical_offset=physical_offset,
        flags=flags,
        born_ms=born,
        store_ms=store_ms,
        tags=tags,
        keys=keys,
        properties=props,
        body=body,
        size=total,
    )


R = TypeVar("R", bound=Record)


@overload
def iter_records(blob: bytes | memoryview, verify: bool = True) -> Iterator[Record]: ...


@overload
def iter_records(blob: bytes | memoryview, verify: bool = True, *, cls: type[R]) -> Iterator[R]: ...


def iter_records(
    blob: bytes | memoryview, verify: bool = True, cls: type[Record] = Record
) -> Iterator[Record]:
    """Decode a pulled batch: stored records laid end to end.

    One pass per record (header unpacked once, CRC checked when `verify`):
    this is the consumer's hot path.
    """
    data = bytes(blob) if not isinstance(blob, bytes) else blob
    end = len(data)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    mv = memoryview(data)
    pos = 0
    while pos < end:
        if pos + HEADER_SIZE > end:
            raise CorruptRecordError(f"header at {pos} runs past {end}")
        (total, magic, crc, qid, flags, qoff, phys, born, store, bl, tl, gl, kl, pl) = unpack(data, pos)
        stop = pos + total
        if magic != RECORD_MAGIC or total != HEADER_SIZE + tl + gl + kl + pl + bl or stop > end:
            raise CorruptRecordError(f"no valid record at {pos} of the batch")
        if verify and crc32(mv[pos + CRC_START : stop]) != crc:
            raise CorruptRecordError(f"crc mismatch in the record at {pos} of the batch")
        p = pos + HEADER_SIZE
        topic = data[p : p + tl].decode("ascii")
        p += tl
        tags = data[p : p + gl].decode("utf-8") if gl else ""
        p += gl
        keys = data[p : p + kl].decode("utf-8") if kl else ""
        p += kl
        props = decode_properties(mv[p : p + pl]) if pl else {}
        p += pl
        yield cls(topic, qid, qoff, phys, flags, born, store, tags, keys, props, data[p:stop], total)
        pos = stop
