"""What the fuzz targets share about records: a reference encoder written
from the format in core/record.py's docstring (not from its code), and
hypothesis strategies for valid messages and for bytes that look like
records but are damaged in one chosen way."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from hypothesis import strategies as st

from core.record import MAX_TOPIC_LEN, RECORD_MAGIC

_HEADER = struct.Struct(">IIIIIQQQQIBHHI")
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Fields:
    topic: str
    queue_id: int
    queue_offset: int
    physical_offset: int
    flags: int
    born_ms: int
    store_ms: int
    tags: str
    keys: str
    properties: dict[str, str]
    body: bytes


def encode_props(props: dict[str, str]) -> bytes:
    out = b""
    for k, v in props.items():
        kb, vb = k.encode(), v.encode()
        out += struct.pack(">H", len(kb)) + kb + struct.pack(">H", len(vb)) + vb
    return out


def encode(f: Fields, *, lengths: tuple[int, ...] | None = None, total: int | None = None) -> bytes:
    """The record `f` stands for, CRC included. `lengths` (body, topic, tags,
    keys, props) and `total` replace the true ones in the header (the CRC is
    still computed over what is written): a record that lies about itself
    but passes the CRC."""
    topic, tags, keys = f.topic.encode(), f.tags.encode(), f.keys.encode()
    props = encode_props(f.properties)
    true = (len(f.body), len(topic), len(tags), len(keys), len(props))
    bl, tl, gl, kl, pl = lengths if lengths is not None else true
    size = _HEADER.size + sum(true)
    head = _HEADER.pack(
        total if total is not None else size, RECORD_MAGIC, 0, f.queue_id, f.flags,
        f.queue_offset, f.physical_offset, f.born_ms, f.store_ms, bl, tl, gl, kl, pl,
    )  # fmt: skip
    raw = bytearray(head + topic + tags + keys + props + f.body)
    struct.pack_into(">I", raw, 8, zlib.crc32(raw[12:]))
    return bytes(raw)


# Topic names the store accepts; names near the limits are drawn on purpose.
topics = st.one_of(
    st.sampled_from(["t", "orders", "%RETRY%g", "a.b-c_d", "x" * MAX_TOPIC_LEN]),
    st.from_regex(r"[A-Za-z0-9_%\-][A-Za-z0-9_.%\-]{0,126}", fullmatch=True).filter(
        lambda t: not t.startswith("__") and t.strip(".") != ""
    ),
)
short_text = st.text(max_size=40)
u16_text = st.text(max_size=200)
props = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6)
bodies = st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=4000))


@st.composite
def fields(draw: st.DrawFn, topic: st.SearchStrategy[str] = topics) -> Fields:
    return Fields(
        topic=draw(topic),
        queue_id=draw(st.integers(0, U32)),
        queue_offset=draw(st.integers(0, U64)),
        physical_offset=draw(st.integers(0, U64)),
        flags=draw(st.integers(0, U32)),
        born_ms=draw(st.integers(0, U64)),
        store_ms=draw(st.integers(0, U64)),
        tags=draw(u16_text),
        keys=draw(u16_text),
        properties=draw(props),
        body=draw(bodies),
    )


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A record damaged in one way: bytes flipped, cut, extended, header
    fields that lie (with a correct CRC over them), or a record that is
    valid but followed by garbage."""
    f = draw(fields())
    how = draw(st.sampled_from(["flip", "cut", "extend", "lengths", "total", "topic", "utf8", "tail"]))
    if how == "lengths":
        lengths = tuple(draw(st.integers(0, bound)) for bound in (U32, 255, 0xFFFF, 0xFFFF, U32))
        return encode(f, lengths=lengths, total=draw(st.one_of(st.none(), st.integers(0, U32))))
    if how == "total":
        return encode(f, total=draw(st.integers(0, U32)))
    raw = bytearray(encode(f))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
    elif how == "cut":
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif how == "extend":
        raw += draw(st.binary(min_size=1, max_size=80))
    elif how in ("topic", "utf8"):
        # bytes that are no topic (not ASCII) or no text (not UTF-8), CRC fixed up
        start = _HEADER.size if how == "topic" else _HEADER.size + len(f.topic)
        room = len(raw) - start
        if room > 0:
            i = start + draw(st.integers(0, room - 1))
            raw[i] = draw(st.integers(0x80, 0xFF))
            struct.pack_into(">I", raw, 8, zlib.crc32(raw[12:]))
    else:
        raw += draw(st.binary(min_size=8, max_size=120))
    return bytes(raw)


record_like = st.one_of(st.binary(max_size=300), damaged(), fields().map(encode))
