"""Stored records built by hand (the store's wire format), for tests of
code that decodes what a broker answered."""

from __future__ import annotations

import zlib

from core.record import CRC, FIXED, RECORD_MAGIC, encode_meta, encode_properties


def make(
    topic: str = "orders",
    queue_id: int = 3,
    queue_offset: int = 42,
    phys: int = 1 << 40,
    body: bytes = b"hello",
    tags: str = "TagA",
    keys: str = "k1 k2",
    props: dict[str, str] | None = None,
    flags: int = 7,
    born: int = 1_700_000_000_123,
    store: int = 1_700_000_000_456,
) -> bytes:
    meta = encode_meta(topic.encode(), tags.encode(), keys.encode(), encode_properties(props or {}))
    size = FIXED.size + len(meta) + len(body)
    buf = bytearray(size)
    FIXED.pack_into(
        buf, 0, size, RECORD_MAGIC, 0, queue_id, flags, queue_offset, phys, born, store, len(body)
    )
    buf[FIXED.size : FIXED.size + len(meta)] = meta
    buf[FIXED.size + len(meta) :] = body
    CRC.pack_into(buf, 8, zlib.crc32(buf[12:]))
    return bytes(buf)
