"""Fuzzing a slave's chunk validation (core/store/replicated.py and the
replicated append, core/store/replica_ops.py): a chunk is accepted only if
it is valid and continues the log; anything else is refused with
CorruptRecordError or ReplicationError and the store is exactly as it was
(log bytes, end, queues, topics, files)."""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from core.errors import CorruptRecordError, ReplicationError
from core.record import Message, frames
from core.store import MessageStore, StoreConfig
from core.store.replicated import validate_chunk
from tests.fuzz.profiles import examples

pytestmark = [pytest.mark.fuzz, pytest.mark.component]

SEGMENT = 64 * 1024
CONFIG = StoreConfig(
    segment_bytes=SEGMENT, max_message_bytes=16 * 1024, cq_entries_per_file=64, warm_segments=False
)
Chunk = tuple[int, bytes]


def fingerprint(s: MessageStore) -> tuple[Any, ...]:
    """Everything a rejected chunk must leave as it was."""
    h = hashlib.sha256()
    for seg in s.commitlog.segments():
        h.update(seg.view)
    queues = {k: (cq.min_offset, cq.max_offset) for k, cq in s.cqs.queues.items()}
    topics = {t: s.topics.queue_count(t) for t in s.topics.names()}
    # the log's segments, not its directory: the next segment is made ahead in the background
    segments = [seg.path.name for seg in s.commitlog.segments()]
    files = sorted(
        str(p.relative_to(s.data_dir))
        for p in s.data_dir.rglob("*")
        if p.is_file() and p.parent.name != "commitlog" and p.name != "checkpoint"
    )
    return s.commitlog.max_offset, h.hexdigest(), queues, topics, segments, files


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Chunk]]:
    """A master's log cut into the chunks it would stream: records of three
    topics (their topic records first) over three segments, end markers
    included."""
    root = Path(tmp_path_factory.mktemp("chunk-source"))
    s = MessageStore(root / "master", CONFIG)
    s.create_topic("a", 2)
    s.create_topic("b", 1)
    for i in range(120):
        s.append([Message("a" if i % 3 else "b", i % 2 if i % 3 else 0, bytes([i]) * (i * 29 % 2500))])
        if i == 60:
            s.create_topic("c", 3)  # a topic defined mid-log
        if i > 60 and i % 7 == 0:
            s.append([Message("c", i % 3, b"c" * i, tags="T", keys="k", properties={"p": str(i)})])
    chunks: list[Chunk] = []
    offset = 0
    while offset < s.commitlog.max_offset:
        data, nxt = s.read_log(offset, 3000)
        chunks.append((offset, data))
        offset = nxt
    s.close()
    assert offset > 2 * SEGMENT
    yield chunks


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("chunk-targets"))


FIELDS = {"queue_id": (12, ">I"), "queue_offset": (20, ">Q"), "physical": (28, ">Q")}
BAD_TOPICS = ["d", "__sys", "__x", "%", ".", "a/b", "\x7f", "a"]


def rewrite(data: bytes, index: int, field: str, value: int) -> bytes:
    """Record `index` (modulo the records there are) of the chunk with a
    header field or its topic changed (`value`: the field's new value, or an
    index into BAD_TOPICS) and the CRC made right again: framing passes, the
    meaning does not."""
    positions, pos = [], 0
    try:
        for _topic, head in frames(data, 0, len(data)):
            positions.append((pos, head))
            pos += head[0]
    except CorruptRecordError:  # an end-of-segment marker
        return data
    if not positions:
        return data
    at, head = positions[index % len(positions)]
    raw = bytearray(data)
    if field in FIELDS:
        where, fmt = FIELDS[field]
        struct.pack_into(fmt, raw, at + where, value % (1 << (8 * struct.calcsize(fmt))))
    else:
        tl = head[10]
        name = BAD_TOPICS[value % len(BAD_TOPICS)]
        raw[at + 65 : at + 65 + tl] = (name * tl)[:tl].encode()
    struct.pack_into(">I", raw, at + 8, zlib.crc32(raw[at + 12 : at + head[0]]))
    return bytes(raw)


@st.composite
def cases(draw: st.DrawFn, chunks: list[Chunk]) -> tuple[int, int, bytes, str]:
    """(chunks the slave already has, offset, bytes, how they were made)."""
    k = draw(st.integers(0, len(chunks) - 1))
    offset, data = chunks[k]
    how = draw(
        st.sampled_from(["next", "flip", "cut", "extend", "join", "other", "shift", "random", "rewrite"])
    )
    if how == "flip":
        raw = bytearray(data)
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= draw(st.integers(1, 255))
        data = bytes(raw)
    elif how == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "extend":
        data += draw(st.one_of(st.binary(min_size=1, max_size=100), st.just(bytes(8))))
    elif how == "join" and k + 1 < len(chunks):
        data += chunks[k + 1][1]  # may cross a segment's end
    elif how == "other":
        offset, data = chunks[draw(st.integers(0, len(chunks) - 1))]  # valid, but not where the log ends
    elif how == "shift":
        offset += draw(st.sampled_from([-SEGMENT, -8, -1, 1, 8, SEGMENT]))
    elif how == "random":
        data = draw(st.binary(max_size=400))
        offset = draw(st.one_of(st.just(offset), st.integers(0, 1 << 20)))
    elif how == "rewrite":
        field = draw(st.sampled_from([*FIELDS, "topic"]))
        value = draw(st.sampled_from([1, 2, 3, 255, 65535, 65536, (1 << 32) - 1, 1 << 40, (1 << 64) - 1]))
        data = rewrite(data, draw(st.integers(0, 50)), field, value)
    return k, max(offset, 0), data, how


def target(scratch: Path, chunks: list[Chunk], k: int) -> MessageStore:
    """A slave's store holding the first `k` chunks."""
    s = MessageStore(Path(tempfile.mkdtemp(dir=scratch)) / "slave", CONFIG)
    for offset, data in chunks[:k]:
        s.append_replicated(offset, data)
    return s


def check_one(scratch: Path, chunks: list[Chunk], case: tuple[int, int, bytes, str]) -> None:
    k, offset, data, how = case
    s = target(scratch, chunks, k)
    try:
        before = fingerprint(s)
        try:
            end = s.append_replicated(offset, data)
        except (CorruptRecordError, ReplicationError) as exc:
            event(f"{how}: refused ({exc.code})")
            after = fingerprint(s)
            changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
            assert not changed, f"a refused chunk ({how}) changed the store: {exc}; {changed}"
            return
        event(f"{how}: accepted")
        validate_chunk(offset, data, SEGMENT)  # accepted: it is valid ...
        assert offset == before[0], "... and continues the log"
        scan = s.commitlog.scan(0)
        assert sum(1 for _ in scan) > 0 or not data
        assert scan.error is None and scan.end <= end == s.commitlog.max_offset
    finally:
        s.close()
        shutil.rmtree(s.data_dir.parent, ignore_errors=True)


@settings(max_examples=examples(1))
@given(data=st.data())
def test_a_chunk_is_accepted_only_if_valid_and_refused_chunks_change_nothing(
    source: list[Chunk], scratch: Path, data: st.DataObject
) -> None:
    check_one(scratch, source, data.draw(cases(source)))


# ---- defects this found, pinned -------------------------------------------------


@settings(max_examples=examples(0.25))
@given(k=st.integers(0, 200), back=st.integers(1, 200))
@example(k=0, back=1)  # the last chunk, topic "c" in it, on an empty slave: "c" was defined, then refused
def test_a_valid_chunk_not_at_the_logs_end_changes_nothing(
    source: list[Chunk], scratch: Path, k: int, back: int
) -> None:
    k, j = k % len(source), len(source) - 1 - (back - 1) % len(source)
    offset, data = source[j]
    check_one(scratch, source, (k, offset, data, "other"))


@settings(max_examples=examples(0.25))
@given(
    k=st.integers(0, 200),
    index=st.integers(0, 50),
    field=st.sampled_from([*FIELDS, "topic"]),
    value=st.integers(0, (1 << 64) - 1),
)
@example(k=5, index=0, field="queue_id", value=(1 << 32) - 1)  # was InvalidArgumentError, topics grown
@example(k=29, index=0, field="topic", value=BAD_TOPICS.index("."))  # was InvalidTopicError
@example(k=29, index=0, field="topic", value=BAD_TOPICS.index("__x"))
def test_a_record_that_lies_is_refused_as_corrupt(
    source: list[Chunk], scratch: Path, k: int, index: int, field: str, value: int
) -> None:
    k %= len(source)
    offset, data = source[k]
    check_one(scratch, source, (k, offset, rewrite(data, index, field, value), "rewrite"))
