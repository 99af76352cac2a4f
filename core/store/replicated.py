"""What a slave's store does with CommitLog bytes copied from its master.

`validate_chunk` checks every record of a chunk with the framing checks every
decoder shares (core.record.frame_entries, which checks as core.record.frames
does: magic, sizes, bounds, topic, CRC, and that each record sits at the
offset it claims and leaves the end-marker room) and turns them into
ConsumeQueue entries; nothing is written until the whole chunk passes. A
chunk holds whole records of one segment, or one end-of-segment marker (its 8
header bytes: the rest of the segment is zero on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import CorruptRecordError
from core.record import BLANK_MAGIC, BLANK_MIN, PREFIX, Entry, check_marker, frame_entries


@dataclass(frozen=True, slots=True)
class CheckedChunk:
    entries: list[Entry]
    new_end: int  # offset after the chunk (next segment's start after a marker)


def validate_chunk(offset: int, data: bytes, segment_bytes: int) -> CheckedChunk:
    rel0 = offset % segment_bytes
    end = len(data)
    if rel0 + end > segment_bytes:
        raise CorruptRecordError(f"chunk at {offset} crosses a segment boundary")
    if end >= BLANK_MIN and PREFIX.unpack_from(data, 0)[1] == BLANK_MAGIC:
        if end != BLANK_MIN:
            raise CorruptRecordError(f"end marker at {offset} is not alone in its chunk")
        return CheckedChunk([], check_marker(PREFIX.unpack_from(data, 0)[0], offset, segment_bytes))
    entries = frame_entries(data, end, base=offset, room=segment_bytes - rel0 - BLANK_MIN)
    return CheckedChunk(entries, offset + end)
