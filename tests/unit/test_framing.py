"""One table of framing corruptions, applied to every decoder of stored records.

The decoders share one set of framing checks (core.record.frames); this
keeps them honest: each must refuse each corruption that applies to it with
CorruptRecordError, saying what failed and where, and accept the record
undamaged. Every case puts one good record first, so "where" is the second
record's position: in the buffer for the client-side decoders, in the log
for the two that know the log offset (the slave's chunk validation and the
recovery scan).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.errors import CorruptRecordError
from core.record import (
    BLANK_MAGIC,
    CRC,
    FIXED,
    HEADER_SIZE,
    PREFIX,
    RECORD_MAGIC,
    Record,
    RecordHeader,
    check_record,
    decode_record,
    encode_meta,
    encode_properties,
    iter_records,
)
from core.store.commitlog import CommitLog
from core.store.replicated import CheckedChunk, validate_chunk

pytestmark = pytest.mark.unit

SEG = 64 * 1024
AT = 3 * SEG + 1000  # log offset of the first (good) record of every case

# Decoders: (buffer, its log offset, position of the record under test) ->
# whatever they return; each raises CorruptRecordError on a bad record.
Decoder = Callable[[bytes, int, int], object]


def record(
    phys: int,
    *,
    topic: bytes = b"orders",
    body: bytes = b"payload-" * 20,
    tags: bytes = b"TagA",
    keys: bytes = b"k1 k2",
    queue_offset: int = 7,
) -> bytearray:
    meta = encode_meta(topic, tags, keys, encode_properties({"trace": "abc"}))
    size = FIXED.size + len(meta) + len(body)
    buf = bytearray(size)
    FIXED.pack_into(buf, 0, size, RECORD_MAGIC, 0, 2, 0, queue_offset, phys, 11, 22, len(body))
    buf[FIXED.size : FIXED.size + len(meta)] = meta
    buf[FIXED.size + len(meta) :] = body
    return reseal(buf)


def reseal(buf: bytearray) -> bytearray:
    """Recompute the CRC, so that only the framing check under test can object."""
    CRC.pack_into(buf, 8, zlib.crc32(buf[12:]))
    return buf


def put(buf: bytearray, offset: int, fmt: str, value: int, seal: bool = False) -> bytearray:
    struct.pack_into(fmt, buf, offset, value)
    return reseal(buf) if seal else buf


def flip(buf: bytearray, offset: int) -> bytearray:
    buf[offset] ^= 0x40
    return buf


@pytest.fixture
def clog(tmp_path: Path) -> Iterator[CommitLog]:
    log = CommitLog(tmp_path / "commitlog", SEG, warm=False)
    log.start_writing_at(AT)
    yield log
    log.close()


def write(log: CommitLog, buf: bytes, at: int) -> None:
    """Put `buf` into the segment at log offset `at`; what does not fit stays
    out (past its end a segment is zero, as after a torn write)."""
    seg = log.segment_for(at)
    assert seg is not None
    rel = at % SEG
    seg.mm[rel : rel + min(len(buf), SEG - rel)] = buf[: SEG - rel]


def _scan(log: CommitLog) -> Decoder:
    """The recovery scan over the bytes written into a segment."""

    def run(buf: bytes, at: int, _pos: int) -> object:
        write(log, buf, at)
        scan = log.scan(at)
        headers = list(scan)
        if scan.failure is not None:
            assert scan.error == str(scan.failure)  # what recovery reports
            raise scan.failure
        return headers

    return run


def decoders(log: CommitLog) -> dict[str, Decoder]:
    return {
        "check_record": lambda buf, _at, pos: check_record(buf, pos, len(buf)),
        "decode_record": lambda buf, _at, pos: decode_record(buf, pos, verify=True),
        "iter_records": lambda buf, _at, _pos: list(iter_records(buf)),
        "validate_chunk": lambda buf, at, _pos: validate_chunk(at, buf, SEG),
        "recovery_scan": _scan(log),
    }


IN_LOG = frozenset({"validate_chunk", "recovery_scan"})  # they know the log offset
ALL = frozenset({"check_record", "decode_record", "iter_records"}) | IN_LOG
# A segment is never short: the scan sees "past the end" as past its segment.
BUFFERS = ALL - {"recovery_scan"}


@dataclass(frozen=True)
class Corruption:
    name: str
    damage: Callable[[int], bytes]  # log offset the record sits at -> its bytes
    what: str  # regex the error message must match
    applies: frozenset[str] = ALL
    gap_to_segment_end: int | None = None  # place it this many bytes before its segment ends
    chunk_level: bool = False  # validate_chunk refuses the whole chunk, naming the chunk's offset


CORRUPTIONS = [
    Corruption("bad magic", lambda at: put(record(at), 4, ">I", 0xDEADBEEF), r"bad magic 0xdeadbeef"),
    Corruption(
        "total_size disagrees with the field lengths",
        lambda at: put(record(at), 0, ">I", len(record(at)) + 1),
        r"size \d+ .*disagrees with field lengths",
    ),
    Corruption(
        "a field length disagrees with total_size",
        lambda at: put(record(at), 52, ">I", len(b"payload-" * 20) + 3, seal=True),
        r"disagrees with field lengths",
    ),
    Corruption(
        "total_size wildly large",
        lambda at: put(record(at), 0, ">I", 0xFFFFFFF0),
        r"disagrees with field lengths",
    ),
    Corruption("record runs past the buffer", lambda at: bytes(record(at)[:-9]), r"runs past", BUFFERS),
    Corruption(
        "truncated header", lambda at: bytes(record(at)[: HEADER_SIZE - 20]), r"header .*runs past", BUFFERS
    ),
    Corruption("zero topic length", lambda at: record(at, topic=b""), r"topic length 0 "),
    Corruption("topic longer than 127", lambda at: record(at, topic=b"t" * 128), r"topic length 128 "),
    Corruption("non-ascii topic", lambda at: record(at, topic="tópico".encode()), r"topic bytes .*not ascii"),
    Corruption("flipped body byte", lambda at: flip(record(at), -3), r"crc mismatch"),
    Corruption("flipped header byte under the crc", lambda at: flip(record(at), 40), r"crc mismatch"),
    Corruption("damaged crc field", lambda at: flip(record(at), 9), r"crc mismatch"),
    Corruption(
        "wrong claimed physical offset",
        lambda at: record(at + 4096),
        r"claims offset \d+",
        IN_LOG,
    ),
    Corruption(
        "no room for the end-of-segment marker",
        lambda at: record(at),
        r"no room for the segment's end marker",
        IN_LOG,
        gap_to_segment_end=4,
    ),
    Corruption(
        "record runs past its segment",
        lambda at: record(at),
        r"runs past|crosses a segment boundary",
        IN_LOG,
        gap_to_segment_end=-16,
        chunk_level=True,
    ),
]


def _case(c: Corruption) -> tuple[bytes, int, int]:
    """(buffer: a good record then the damaged one, its log offset, where the damaged one starts)."""
    good_len = len(record(0))
    at = AT
    if c.gap_to_segment_end is not None:
        rec_len = len(c.damage(0))
        seg_end = AT - AT % SEG + SEG
        at = seg_end - c.gap_to_segment_end - rec_len - good_len
    good = bytes(record(at, queue_offset=6))
    return good + bytes(c.damage(at + good_len)), at, good_len


@pytest.mark.parametrize(
    ("decoder", "corruption"),
    [(d, c) for c in CORRUPTIONS for d in sorted(c.applies)],
    ids=lambda x: x if isinstance(x, str) else x.name,
)
def test_every_decoder_refuses_every_corruption(
    decoder: str, corruption: Corruption, clog: CommitLog
) -> None:
    buf, at, pos = _case(corruption)
    with pytest.raises(CorruptRecordError) as info:
        decoders(clog)[decoder](buf, at, pos)
    message = str(info.value)
    assert re.search(corruption.what, message), message
    if decoder in IN_LOG:
        where = at if corruption.chunk_level and decoder == "validate_chunk" else at + pos
    else:
        where = pos
    assert re.search(rf"\bat {where}\b", message), f"{message!r} does not say where ({where})"


@pytest.mark.parametrize("decoder", sorted(ALL))
def test_every_decoder_accepts_the_undamaged_records(decoder: str, clog: CommitLog) -> None:
    first = bytes(record(AT, queue_offset=6))
    second = AT + len(first)
    buf = first + bytes(record(second))
    out = decoders(clog)[decoder](buf, AT, len(first))
    if decoder in ("iter_records", "recovery_scan"):
        assert isinstance(out, list)
        assert [(r.topic, r.queue_offset, r.physical_offset) for r in out] == [
            ("orders", 6, AT),
            ("orders", 7, second),
        ]
    elif decoder == "validate_chunk":
        assert isinstance(out, CheckedChunk)
        assert [e[:5] for e in out.entries] == [
            ("orders", 2, 6, AT, len(first)),
            ("orders", 2, 7, second, len(first)),
        ]
        assert out.new_end == AT + len(buf)
    elif decoder == "decode_record":
        assert isinstance(out, Record)
        assert (out.topic, out.tags, out.keys, out.properties) == (
            "orders",
            "TagA",
            "k1 k2",
            {"trace": "abc"},
        )
        assert (out.physical_offset, out.body) == (second, b"payload-" * 20)
    else:
        assert isinstance(out, RecordHeader)
        assert (out.topic, out.tags, out.physical_offset, out.size) == ("orders", "TagA", second, len(first))


# End-of-segment markers: only the two decoders that walk a segment meet them.


def test_a_correct_end_marker_is_accepted(clog: CommitLog) -> None:
    rel = AT % SEG
    next_segment = AT - rel + SEG
    assert validate_chunk(AT, PREFIX.pack(SEG - rel, BLANK_MAGIC), SEG).new_end == next_segment
    good = bytes(record(AT))
    write(clog, good + PREFIX.pack(SEG - rel - len(good), BLANK_MAGIC), AT)
    scan = clog.scan(AT)
    assert [h.physical_offset for h in scan] == [AT]
    assert scan.failure is None and scan.end == next_segment


def test_an_end_marker_of_the_wrong_size_is_refused(clog: CommitLog) -> None:
    with pytest.raises(CorruptRecordError, match=rf"end marker at {AT} has size 100"):
        validate_chunk(AT, PREFIX.pack(100, BLANK_MAGIC), SEG)
    good = bytes(record(AT))
    with pytest.raises(CorruptRecordError, match=rf"end marker at {AT + len(good)} has size 100"):
        _scan(clog)(good + PREFIX.pack(100, BLANK_MAGIC), AT, 0)


def test_an_end_marker_must_be_alone_in_its_chunk() -> None:
    rel = AT % SEG
    with pytest.raises(CorruptRecordError, match=rf"end marker at {AT} is not alone"):
        validate_chunk(AT, PREFIX.pack(SEG - rel, BLANK_MAGIC) + bytes(8), SEG)


def test_the_zeroed_tail_ends_the_scan_quietly(clog: CommitLog) -> None:
    good = bytes(record(AT))
    headers = _scan(clog)(good, AT, 0)
    assert isinstance(headers, list) and [h.physical_offset for h in headers] == [AT]


@pytest.mark.parametrize(
    "field",
    [
        {"tags": b"\xff\xfe"},
        {"keys": b"k\xc3"},
    ],
    ids=["tags", "keys"],
)
def test_text_that_is_not_utf8_is_a_corrupt_record(field: dict[str, bytes]) -> None:
    """CRC-valid (written that way), framing intact: still a CorruptRecordError,
    never a UnicodeDecodeError escaping to the caller."""
    bad = bytes(record(0, **field))  # type: ignore[arg-type]
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        decode_record(bad)
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        list(iter_records(bad))


def test_a_property_that_is_not_utf8_is_a_corrupt_record() -> None:
    from core.record import decode_properties

    with pytest.raises(CorruptRecordError, match="UTF-8"):
        decode_properties(b"\x00\x01\xff\x00\x01a")
