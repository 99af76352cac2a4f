"""What a slave's store does with CommitLog bytes copied from its master.

`validate_chunk` checks every record of a chunk (magic, sizes, CRC, that it
sits at the offset it claims, that it leaves the end-marker room) and turns
them into ConsumeQueue entries; nothing is written until the whole chunk
passes. A chunk holds whole records of one segment, or one end-of-segment
marker (its 8 header bytes: the rest of the segment is zero on both sides).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from core.errors import CorruptRecordError
from core.record import (
    BLANK_MAGIC,
    BLANK_MIN,
    CRC_START,
    HEADER,
    HEADER_SIZE,
    MAX_TOPIC_LEN,
    PREFIX,
    RECORD_MAGIC,
    tag_hash,
)
from core.store.commitlog import Entry


@dataclass(frozen=True, slots=True)
class CheckedChunk:
    entries: list[Entry]
    new_end: int  # offset after the chunk (next segment's start after a marker)


def validate_chunk(offset: int, data: bytes, segment_bytes: int) -> CheckedChunk:
    rel0 = offset % segment_bytes
    if rel0 + len(data) > segment_bytes:
        raise CorruptRecordError(f"chunk at {offset} crosses a segment boundary")
    if len(data) >= BLANK_MIN and PREFIX.unpack_from(data, 0)[1] == BLANK_MAGIC:
        total, _ = PREFIX.unpack_from(data, 0)
        if len(data) != BLANK_MIN or total != segment_bytes - rel0:
            raise CorruptRecordError(f"bad end-of-segment marker at {offset}")
        return CheckedChunk([], offset - rel0 + segment_bytes)
    entries: list[Entry] = []
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    mv = memoryview(data)
    end = len(data)
    limit = segment_bytes - rel0 - BLANK_MIN  # a record must leave the marker's room
    topics = _TOPICS
    pos = 0
    # One tight loop (this is the slave's hot path): the checks of
    # core.record.check_record, without building an object per record.
    while pos < end:
        if pos + HEADER_SIZE > end:
            raise CorruptRecordError(f"truncated header at {offset + pos}")
        (total, magic, crc, qid, _f, qoff, phys, _b, _s, bl, tl, gl, kl, pl) = unpack(data, pos)
        stop = pos + total
        if magic != RECORD_MAGIC or total != HEADER_SIZE + tl + gl + kl + pl + bl or stop > end:
            raise CorruptRecordError(f"no valid record at {offset + pos}")
        if tl == 0 or tl > MAX_TOPIC_LEN:
            raise CorruptRecordError(f"topic length {tl} at {offset + pos}")
        if phys != offset + pos:
            raise CorruptRecordError(f"record at {offset + pos} claims offset {phys}")
        if stop > limit:
            raise CorruptRecordError(f"record at {offset + pos} leaves no room for the segment's end marker")
        if crc32(mv[pos + CRC_START : stop]) != crc:
            raise CorruptRecordError(f"crc mismatch in the record at {offset + pos}")
        p = pos + HEADER_SIZE
        tb = data[p : p + tl]
        topic = topics.get(tb)
        if topic is None:
            try:
                topic = tb.decode("ascii")
            except UnicodeDecodeError as exc:
                raise CorruptRecordError(f"topic bytes at {offset + pos} are not ascii") from exc
            if len(topics) < 65536:
                topics[tb] = topic
        th = tag_hash(data[p + tl : p + tl + gl].decode("utf-8", "replace")) if gl else 0
        entries.append((topic, qid, qoff, phys, total, th))
        pos = stop
    return CheckedChunk(entries, offset + len(data))


_TOPICS: dict[bytes, str] = {}
