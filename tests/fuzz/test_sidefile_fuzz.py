"""Fuzzing the JSON side files (core/sidefiles.py and its tables: topics,
offsets, epochs, the controller's state), the store's checkpoint and
clean-stop marker, and system record bodies: whatever a file holds, loading
it answers the table, rebuilds it from the log, or raises the documented
error (DamagedFileError, CorruptRecordError for a record), never another
exception."""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from core.epochs import EPOCHS, EpochFile, history_fault
from core.errors import CorruptRecordError
from core.offsets import OFFSETS, ConsumerOffsets, validate_group
from core.record import SYSTEM_TOPIC, Message, Record, validate_topic
from core.sidefiles import DamagedFileError, LogHistory
from core.store import MessageStore, StoreConfig
from core.store.system import decode_system
from core.store.topics import MAX_QUEUES, TOPICS, TopicTable
from nameserver.controller import Controller
from nameserver.controller_store import STATE_FILE
from tests.fuzz.documents import (
    controller_json,
    deep,
    epochs_json,
    marker_json,
    noise,
    offsets_json,
    topics_json,
)
from tests.fuzz.profiles import examples

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

DEEP = ("[" * 2000 + "]" * 2000).encode()  # deeper than json.loads recurses


def complete(end: int = 0) -> LogHistory:
    """A log that holds its whole history (nothing in it)."""
    return LogHistory(0, end, lambda kind: [])


PARTIAL = LogHistory(1 << 20, 2 << 20, lambda kind: [])  # retention removed its start


def fresh(name: str, content: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="tailrace-fuzz-"))
    (d / name).write_bytes(content)
    return d


def kept_aside(d: Path, name: str) -> bool:
    return any(p.name.startswith(f"{name}.damaged-") for p in d.iterdir())


@settings(max_examples=examples(1))
@given(noise(topics_json))
@example(DEEP)
def test_topics_json_loads_or_is_rebuilt(content: bytes) -> None:
    d = fresh(TOPICS, content)
    try:
        table = TopicTable(d, 1024)
        if table.damage is None:
            event("loaded")
            for name in table.names():
                validate_topic(name)
                assert 1 <= (table.queue_count(name) or 0) <= MAX_QUEUES
        else:
            event("damaged")
            table.restore(complete(), [])  # a log with its whole history rebuilds it ...
            assert kept_aside(d, TOPICS) and table.names() == []
            (d / TOPICS).write_bytes(content)
            with pytest.raises(DamagedFileError):  # ... one without refuses to start
                TopicTable(d, 1024).restore(PARTIAL, [])
    finally:
        shutil.rmtree(d)


@settings(max_examples=examples(1))
@given(noise(offsets_json))
@example(DEEP)
def test_offsets_json_loads_or_is_rebuilt(content: bytes) -> None:
    d = fresh(OFFSETS, content)
    try:
        try:
            offsets = ConsumerOffsets(d)
        except DamagedFileError:
            event("damaged")
            ConsumerOffsets(d, complete())
            assert kept_aside(d, OFFSETS)
            return
        event("loaded")
        for (group, _topic, qid), off in offsets._offsets.items():
            validate_group(group)
            assert qid >= 0 and 0 <= off < 1 << 64
    finally:
        shutil.rmtree(d)


@settings(max_examples=examples(1))
@given(noise(epochs_json), st.integers(0, 1 << 40))
@example(DEEP, 0)
def test_epochs_json_loads_or_is_rebuilt(content: bytes, log_end: int) -> None:
    d = fresh(EPOCHS, content)
    try:
        try:
            epochs = EpochFile(d, log_end)
        except DamagedFileError:
            event("damaged")
            with pytest.raises(DamagedFileError):
                EpochFile(d, log_end, PARTIAL)
            EpochFile(d, log_end, complete(log_end))
            assert kept_aside(d, EPOCHS)
            return
        event("loaded")
        assert history_fault(epochs.history, log_end) == ""
    finally:
        shutil.rmtree(d)


@settings(max_examples=examples(1))
@given(noise(controller_json))
@example(DEEP)
def test_controller_json_loads_or_refuses_to_start(content: bytes) -> None:
    d = fresh(STATE_FILE, content)
    try:
        try:
            ctl = Controller(d, 4000)
        except DamagedFileError as exc:
            event("damaged")
            assert exc.path == d / STATE_FILE
            return
        event("loaded")
        status = ctl.status(0)
        assert all(g["epoch"] >= 0 for g in status.values())
    finally:
        shutil.rmtree(d)


@settings(max_examples=examples(1))
@given(st.one_of(st.binary(max_size=100), marker_json.map(str.encode), deep(2000).map(str.encode)))
@example(b'{"end_offset": 1e999}')  # json.loads reads it as infinity
@example(DEEP)
def test_system_record_bodies_decode_or_are_corrupt(body: bytes) -> None:
    rec = Record(SYSTEM_TOPIC, 0, 0, 0, 0, 0, 0, "topic", "", {}, body, 0)
    try:
        kind, payload = decode_system(rec)
    except CorruptRecordError:
        return
    assert kind == "topic" and isinstance(payload, dict)


# ---- the checkpoint and the clean-stop marker: a store opens whatever they hold ---

CONFIG = StoreConfig(
    segment_bytes=64 * 1024, max_message_bytes=16 * 1024, cq_entries_per_file=16, warm_segments=False
)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[bytes]]]:
    d = Path(tmp_path_factory.mktemp("markers")) / "store"
    with MessageStore(d, CONFIG) as s:
        s.create_topic("t", 1)
        s.append([Message("t", 0, bytes([i]) * (i * 31 % 3000)) for i in range(60)])
        data = s.read("t", 0, 0, 100, 1 << 20).data
    yield d, [data]


def checkpoint_bytes(flushed: int, dispatched: int) -> bytes:
    head = struct.pack(">IIQQ", 0x54524350, 1, flushed, dispatched)
    return head + struct.pack(">I", zlib.crc32(head)) + bytes(4)


offsets = st.one_of(st.integers(0, 300_000), st.integers(0, (1 << 64) - 1))
checkpoints = st.one_of(st.none(), st.binary(max_size=40), st.builds(checkpoint_bytes, offsets, offsets))
markers = st.one_of(st.none(), noise(marker_json))


@settings(max_examples=examples(0.5))
@given(checkpoints, markers)
@example(None, b'{"end_offset": 1e999}')  # was OverflowError: the store did not open
@example(None, DEEP)  # was RecursionError
def test_a_store_opens_with_any_checkpoint_and_marker(
    golden: tuple[Path, list[bytes]], checkpoint: bytes | None, marker: bytes | None
) -> None:
    src, [expected] = golden
    d = Path(tempfile.mkdtemp(prefix="tailrace-fuzz-")) / "store"
    shutil.copytree(src, d)
    try:
        for name, content in (("checkpoint", checkpoint), ("clean_shutdown", marker)):
            if content is not None:
                (d / name).write_bytes(content)
        with MessageStore(d, CONFIG) as s:
            event("clean" if s.recovery.clean else "recovered")
            assert s.read("t", 0, 0, 100, 1 << 20).data == expected
            assert s.recovery.bytes_cut == 0
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)
