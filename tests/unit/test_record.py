"""The record codec: every field round-trips, and damage is always caught."""

from __future__ import annotations

import pytest

from core.errors import CorruptRecordError, InvalidTopicError
from core.record import (
    HEADER_SIZE,
    check_record,
    decode_properties,
    decode_record,
    encode_properties,
    iter_records,
    tag_hash,
    validate_topic,
)
from tests.helpers.records import make

pytestmark = pytest.mark.unit


def test_every_field_round_trips() -> None:
    props = {"trace": "abc", "ünï": "cødé", "empty": ""}
    raw = make(props=props, body=bytes(range(256)) * 3)
    rec = decode_record(raw)
    assert rec.topic == "orders"
    assert rec.queue_id == 3
    assert rec.queue_offset == 42
    assert rec.physical_offset == 1 << 40
    assert rec.flags == 7
    assert rec.born_ms == 1_700_000_000_123
    assert rec.store_ms == 1_700_000_000_456
    assert rec.tags == "TagA"
    assert rec.keys == "k1 k2"
    assert rec.properties == props
    assert rec.body == bytes(range(256)) * 3
    assert rec.size == len(raw)


def test_empty_optional_fields() -> None:
    rec = decode_record(make(tags="", keys="", body=b""))
    assert (rec.tags, rec.keys, rec.properties, rec.body) == ("", "", {}, b"")
    assert rec.size == HEADER_SIZE + len("orders")


def test_iter_records_decodes_a_batch() -> None:
    blob = b"".join(make(queue_offset=i, body=str(i).encode()) for i in range(10))
    assert [r.body for r in iter_records(blob)] == [str(i).encode() for i in range(10)]


def test_every_single_byte_flip_is_detected() -> None:
    raw = make()
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0x01
        with pytest.raises(CorruptRecordError):
            check_record(damaged, 0, len(damaged))


def test_truncated_record_is_detected() -> None:
    raw = make()
    for cut in (1, 10, HEADER_SIZE - 1, HEADER_SIZE + 1, len(raw) - 1):
        with pytest.raises(CorruptRecordError):
            check_record(raw[:cut], 0, cut)


def test_size_field_is_bounds_checked_before_use() -> None:
    raw = bytearray(make())
    raw[0:4] = (0xFFFFFFF0).to_bytes(4, "big")
    with pytest.raises(CorruptRecordError, match=r"disagrees|past"):
        check_record(raw, 0, len(raw))


def test_properties_codec_rejects_truncation() -> None:
    enc = encode_properties({"a": "b"})
    assert decode_properties(enc) == {"a": "b"}
    with pytest.raises(CorruptRecordError):
        decode_properties(enc[:-1])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 128, "tópico", "a\x00"])
def test_bad_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic(name)


@pytest.mark.parametrize("name", ["a", "Orders.v2", "x" * 127, "a-b_c.d", ".hidden"])
def test_good_topic_names(name: str) -> None:
    assert validate_topic(name) == name.encode()


def test_tag_hash_is_stable_and_nonzero() -> None:
    assert tag_hash("") == 0
    assert tag_hash("TagA") == tag_hash("TagA") != tag_hash("TagB")
    # fixed across processes and versions: it is stored on disk
    assert tag_hash("TagA") == int.from_bytes(
        __import__("hashlib").blake2b(b"TagA", digest_size=8).digest(), "big"
    )


def test_batch_decoder_detects_every_flip() -> None:
    blob = make(queue_offset=1, body=b"first") + make(queue_offset=2, body=b"second")
    assert [r.body for r in iter_records(blob)] == [b"first", b"second"]
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x20
        with pytest.raises(CorruptRecordError):
            list(iter_records(bytes(damaged)))
