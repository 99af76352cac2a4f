"""Bad input raises a clear TailraceError and leaves the store exactly as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidOffsetError,
    InvalidQueueError,
    InvalidTopicError,
    MessageTooLargeError,
    StoreClosedError,
    StoreLockedError,
    TailraceError,
    UnknownTopicError,
)
from core.record import Message
from core.store import MessageStore, StoreConfig

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]


def fingerprint(s: MessageStore) -> tuple[Any, ...]:
    """Everything observable about a store's contents."""
    clog = s.commitlog
    h = hashlib.sha256()
    for seg in clog.segments():
        h.update(seg.view)
    queues = {k: (cq.min_offset, cq.max_offset) for k, cq in s.cqs.queues.items()}
    files = sorted(str(p.relative_to(s.data_dir)) for p in s.data_dir.rglob("*") if p.is_file())
    return clog.max_offset, h.hexdigest(), queues, s.topics.names(), files


GOOD = Message("t", 0, b"ok")

BAD_BATCHES: list[tuple[str, list[Message], type[TailraceError]]] = [
    ("oversized", [GOOD, Message("t", 1, b"x" * 20_000)], MessageTooLargeError),
    ("bad topic", [GOOD, Message("no/slash", 0, b"x")], InvalidTopicError),
    ("dots topic", [Message("..", 0, b"x")], InvalidTopicError),
    ("long topic", [Message("t" * 128, 0, b"x")], InvalidTopicError),
    ("unknown topic", [GOOD, Message("nope", 0, b"x")], UnknownTopicError),
    ("queue too high", [GOOD, Message("t", 2, b"x")], InvalidQueueError),
    ("negative queue", [Message("t", -1, b"x")], InvalidQueueError),
    ("queue not int", [Message("t", "0", b"x")], InvalidQueueError),  # type: ignore[arg-type]
    ("body not bytes", [GOOD, Message("t", 0, "text")], InvalidArgumentError),  # type: ignore[arg-type]
    ("negative born", [Message("t", 0, b"x", born_ms=-5)], InvalidArgumentError),
    ("flags too big", [Message("t", 0, b"x", flags=1 << 32)], InvalidArgumentError),
    ("tags not str", [Message("t", 0, b"x", tags=["a"])], InvalidArgumentError),  # type: ignore[arg-type]
    ("props not map", [Message("t", 0, b"x", properties=[1])], InvalidArgumentError),  # type: ignore[arg-type]
    ("huge tags", [Message("t", 0, b"x", tags="a" * 70_000)], InvalidArgumentError),
    ("surrogate tags", [GOOD, Message("t", 0, b"x", tags="\ud800")], InvalidArgumentError),
    ("surrogate keys", [GOOD, Message("t", 0, b"x", keys="\udfff")], InvalidArgumentError),
    ("surrogate prop", [Message("t", 0, b"x", properties={"k": "\ud800"})], InvalidArgumentError),
    ("not a message", [GOOD, ("t", 0, b"x")], InvalidArgumentError),  # type: ignore[list-item]
]


@pytest.mark.parametrize("name,batch,error", BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_bad_batch_rejected_whole_and_store_unchanged(
    open_store: Open, name: str, batch: list[Message], error: type[TailraceError]
) -> None:
    s = open_store()
    s.create_topic("t", 2)
    s.append([Message("t", i % 2, b"before") for i in range(20)])
    before = fingerprint(s)
    with pytest.raises(error) as exc:
        s.append(batch)
    assert exc.value.code and str(exc.value).startswith(exc.value.code)
    assert fingerprint(s) == before
    # and the store still works, continuing at the right offsets
    assert s.append([GOOD]) == [(before[0], 10)]


def test_append_needs_a_list(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError):
        s.append(GOOD)  # type: ignore[arg-type]


def test_read_after_close_is_a_clear_error(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    s.append([GOOD])
    s.close()
    with pytest.raises(StoreClosedError):
        s.read("t", 0, 0, 1, 100)


@pytest.mark.parametrize(
    "args,error",
    [
        (("t", 0, -1, 10, 1000), InvalidOffsetError),
        (("t", 0, "3", 10, 1000), InvalidOffsetError),
        (("t", 5, 0, 10, 1000), InvalidQueueError),
        (("t", 0, 0, 0, 1000), InvalidArgumentError),
        (("t", 0, 0, 10, -1), InvalidArgumentError),
        (("x/y", 0, 0, 10, 1000), InvalidTopicError),
        (("nope", 0, 0, 10, 1000), UnknownTopicError),
    ],
)
def test_bad_reads(open_store: Open, args: tuple[Any, ...], error: type[TailraceError]) -> None:
    s = open_store()
    s.create_topic("t", 1)
    s.append([GOOD])
    before = fingerprint(s)
    with pytest.raises(error):
        s.read(*args)
    assert fingerprint(s) == before


@pytest.mark.parametrize("queues", [0, -1, 100_000, "4", True])
def test_bad_topic_definitions(open_store: Open, queues: Any) -> None:
    s = open_store()
    with pytest.raises(InvalidArgumentError):
        s.create_topic("t", queues)
    assert s.topics.names() == []


def test_queue_count_never_shrinks(open_store: Open) -> None:
    s = open_store()
    assert s.create_topic("t", 4)
    assert not s.create_topic("t", 2)
    assert s.topics.queue_count("t") == 4


def test_second_process_cannot_open_the_same_dir(open_store: Open, tmp_path: Path) -> None:
    open_store(tmp_path / "d")
    with pytest.raises(StoreLockedError):
        MessageStore(tmp_path / "d", StoreConfig(segment_bytes=64 * 1024, max_message_bytes=1024))


def test_segment_size_cannot_change(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("t", 1)
    s.append([GOOD])
    s.close()
    with pytest.raises(ConfigError, match="segment_bytes"):
        open_store(tmp_path / "d", segment_bytes=128 * 1024)


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"segment_bytes": 100_000}, "store.segment_bytes"),
        ({"max_message_bytes": 64 * 1024}, "store.max_message_bytes"),
        ({"flush_interval_ms": 0}, "store.flush_interval_ms"),
        ({"disk_max_used_ratio": 1.5}, "store.disk_max_used_ratio"),
    ],
)
def test_bad_config_names_the_key(open_store: Open, overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        open_store(**overrides)
    assert exc.value.key == key
