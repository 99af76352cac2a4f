"""Fuzzing the record codec (core/record.py): every decoder of stored bytes
answers a record or CorruptRecordError, never another exception, and what
the encoder writes decodes to what was given."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from core.errors import CorruptRecordError, InvalidArgumentError, TailraceError, UnknownTopicError
from core.record import (
    HEADER_SIZE,
    Message,
    Record,
    check_record,
    decode_properties,
    decode_record,
    encode_properties,
    frame_entries,
    frames,
    iter_records,
    record_headers,
)
from core.store import MessageStore, StoreConfig
from tests.fuzz.profiles import examples
from tests.fuzz.records import U32, U64, Fields, encode, encode_props, fields, record_like

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]


def fields_of(r: Record) -> Fields:
    return Fields(
        r.topic, r.queue_id, r.queue_offset, r.physical_offset, r.flags, r.born_ms, r.store_ms,
        r.tags, r.keys, r.properties, r.body,
    )  # fmt: skip


def outcome(fn: object, *args: object, **kw: object) -> list[object] | CorruptRecordError:
    """The walk's items, or the CorruptRecordError it raised (any other
    exception fails the test)."""
    try:
        return list(fn(*args, **kw))  # type: ignore[operator]
    except CorruptRecordError as exc:
        return exc


@settings(max_examples=examples(2))
@given(record_like, st.binary(max_size=8), st.booleans())
@example(b"", b"", True)
@example(bytes(HEADER_SIZE), b"", True)
def test_decode_answers_a_record_or_corrupt(raw: bytes, prefix: bytes, verify: bool) -> None:
    buf = prefix + raw
    try:
        rec = decode_record(buf, len(prefix), verify)
    except CorruptRecordError:
        return
    assert HEADER_SIZE < rec.size <= len(raw)
    assert 1 <= len(rec.topic) <= 127 and rec.topic.isascii()
    props_len = struct.unpack_from(">I", buf, len(prefix) + 61)[0]
    if verify and len(encode_props(rec.properties)) == props_len:  # (no repeated property keys)
        assert encode(fields_of(rec)) == raw[: rec.size], "a CRC-valid record decodes to itself"


@settings(max_examples=examples(2))
@given(
    st.lists(record_like, max_size=4).map(b"".join),
    st.integers(0, U64 >> 1),
    st.integers(0, 1 << 20),
    st.booleans(),
)
def test_every_walker_answers_records_or_corrupt(blob: bytes, base: int, room: int, verify: bool) -> None:
    """frames, record_headers, check_record, iter_records and frame_entries
    share one set of checks: on the same bytes they fail or pass together."""
    walked = outcome(frames, blob, 0, len(blob), verify=verify)
    decoded = outcome(iter_records, blob, verify)
    outcome(frames, blob, 0, len(blob), base=base, room=room, until_blank=True)
    outcome(frame_entries, blob, len(blob), base=base, room=room)
    if verify:
        headers = outcome(record_headers, blob, 0, len(blob))
        assert type(headers) is type(walked)
        if isinstance(walked, list):
            assert isinstance(headers, list) and len(headers) == len(walked)
    if isinstance(decoded, list):
        assert isinstance(walked, list) and len(walked) == len(decoded)
        assert sum(r.size for r in decoded) == len(blob)  # type: ignore[attr-defined]
    if blob:
        try:
            hdr = check_record(blob, 0, len(blob))
        except CorruptRecordError:
            return
        assert hdr.size <= len(blob)


@settings(max_examples=examples(1))
@given(st.lists(fields(), min_size=1, max_size=5))
def test_reference_records_round_trip(records: list[Fields]) -> None:
    blob = b"".join(encode(f) for f in records)
    assert [fields_of(r) for r in iter_records(blob)] == records
    assert fields_of(decode_record(encode(records[0]))) == records[0]


@settings(max_examples=examples(2))
@given(st.binary(max_size=200))
@example(b"\x00\x01\xff\x00\x00")  # a key that is not UTF-8
@example(b"\x00\x05ab")  # a key cut short
def test_properties_decode_or_corrupt(raw: bytes) -> None:
    try:
        props = decode_properties(raw)
    except CorruptRecordError:
        return
    if len(encode_properties(props)) == len(raw):
        assert encode_properties(props) == raw


@settings(max_examples=examples(1))
@given(st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=10))
def test_properties_round_trip(props: dict[str, str]) -> None:
    assert decode_properties(encode_properties(props)) == props


# ---- the encoder, through a store: what it writes decodes to what was given ----

TOPICS = {"t": 4, "%RETRY%g": 1, "x" * 127: 2}
CONFIG = StoreConfig(segment_bytes=1 << 20, max_message_bytes=64 * 1024, warm_segments=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MessageStore]:
    s = MessageStore(Path(tmp_path_factory.mktemp("codec")) / "store", CONFIG)
    for name, queues in TOPICS.items():
        s.create_topic(name, queues)
    yield s
    s.close()


def stored_record(s: MessageStore, topic: str, qid: int, qoff: int) -> Record:
    got = s.read(topic, qid, qoff, 1, 1 << 20)
    assert got.count == 1
    return decode_record(got.data)


@settings(max_examples=examples(1))
@given(
    st.sampled_from(sorted(TOPICS)).flatmap(lambda t: st.tuples(st.just(t), st.integers(0, TOPICS[t] - 1))),
    fields(),
)
def test_what_the_store_encodes_decodes_to_the_message(
    store: MessageStore, where: tuple[str, int], f: Fields
) -> None:
    topic, qid = where
    msg = Message(topic, qid, f.body, f.tags, f.keys, f.properties, f.flags, f.born_ms)
    [(phys, qoff)] = store.append([msg])
    rec = stored_record(store, topic, qid, qoff)
    assert (rec.topic, rec.queue_id, rec.queue_offset, rec.physical_offset) == (topic, qid, qoff, phys)
    assert (rec.tags, rec.keys, rec.properties, rec.body) == (f.tags, f.keys, f.properties, f.body)
    assert (rec.flags, rec.born_ms) == (f.flags, f.born_ms)


odd_ints = st.one_of(st.integers(-5, 10), st.sampled_from([U32, U32 + 1, U64, U64 + 1, -(1 << 63)]))
odd_values = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=5), st.binary(max_size=5)
)


def huge_text(n: int) -> st.SearchStrategy[str]:
    """Text of about `n` characters (hypothesis draws nothing that long itself)."""
    return st.text(min_size=1, max_size=4).map(lambda t: (t * n)[: n + len(t)])


odd_text = st.one_of(st.text(max_size=20), huge_text(66_000), odd_values)


def mostly(good: st.SearchStrategy[object], odd: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """`good` four times in five: a message with one odd field reaches the
    check of that field, not the first check it fails."""
    return st.integers(0, 4).flatmap(lambda i: odd if i == 0 else good)


@settings(max_examples=examples(1))
@given(
    topic=mostly(
        st.sampled_from(sorted(TOPICS)), st.one_of(st.sampled_from(["nope", "__sys", "", "a/b"]), odd_text)
    ),
    queue_id=mostly(st.integers(0, 1), st.one_of(odd_ints, odd_values)),
    body=mostly(
        st.binary(max_size=100),
        st.one_of(st.binary(min_size=1, max_size=3).map(lambda b: b * 22_000), odd_values),
    ),
    tags=mostly(st.text(max_size=10), odd_text),
    keys=mostly(st.text(max_size=10), odd_text),
    properties=mostly(
        st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)),
        st.one_of(
            st.dictionaries(st.text(max_size=10), st.text(max_size=10), min_size=100, max_size=200),
            st.dictionaries(st.text(max_size=5), huge_text(40_000), min_size=1, max_size=2),
            odd_values,
        ),
    ),
    flags=mostly(st.integers(0, U32), st.one_of(odd_ints, odd_values)),
    born_ms=mostly(st.integers(0, U64), st.one_of(odd_ints, odd_values)),
)
def test_the_encoder_stores_or_refuses_and_changes_nothing(store: MessageStore, **kw: object) -> None:
    """Any field of any type: stored and read back as given, or refused with
    an InvalidArgumentError (its subclasses included) or UnknownTopicError,
    the log and its queues as they were."""
    msg = Message(**kw)  # type: ignore[arg-type]
    before = (store.commitlog.max_offset, store.topics.names())
    try:
        [(_phys, qoff)] = store.append([msg])
    except (InvalidArgumentError, UnknownTopicError) as exc:
        event(f"refused: {exc.code}")
        assert (store.commitlog.max_offset, store.topics.names()) == before
        return
    except TailraceError as exc:
        pytest.fail(f"an undocumented refusal of a message: {exc!r}")
    event("stored")
    assume(isinstance(msg.topic, str))
    rec = stored_record(store, msg.topic, msg.queue_id, qoff)
    assert rec.body == bytes(msg.body)
    # (a falsy `keys` or `properties` of another type, None say, is stored as none)
    assert (rec.tags, rec.keys, rec.properties) == (msg.tags, msg.keys or "", dict(msg.properties or {}))
