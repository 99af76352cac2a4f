"""What a slave's store does with CommitLog bytes copied from its master.

`validate_chunk` checks every record of a chunk (magic, sizes, CRC, that it
sits at the offset it claims, that it leaves the end-marker room) and turns
them into ConsumeQueue entries; nothing is written until the whole chunk
passes. A chunk holds whole records of one segment, or one end-of-segment
marker (its 8 header bytes: the rest of the segment is zero on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import CorruptRecordError
from core.record import BLANK_MAGIC, BLANK_MIN, PREFIX, check_record, tag_hash
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
    pos = 0
    while pos < len(data):
        hdr = check_record(data, pos, len(data))
        phys = offset + pos
        if hdr.physical_offset != phys:
            raise CorruptRecordError(f"record at {phys} claims offset {hdr.physical_offset}")
        if rel0 + pos + hdr.size + BLANK_MIN > segment_bytes:
            raise CorruptRecordError(f"record at {phys} leaves no room for the segment's end marker")
        entries.append((hdr.topic, hdr.queue_id, hdr.queue_offset, phys, hdr.size, tag_hash(hdr.tags)))
        pos += hdr.size
    return CheckedChunk(entries, offset + len(data))
