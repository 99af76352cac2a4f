"""Fuzzing ConsumeQueue reading, through the store's public API (open, read,
queue_offsets): random damage to a ConsumeQueue file makes the store refuse
to open with CorruptRecordError, or reads answer records or bytes that fail
to decode with CorruptRecordError, never another exception; and the
documented rebuild (delete the checkpoint, the clean-stop marker and
`consumequeue/`, then open) brings every queue back exactly."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from core.errors import CorruptRecordError
from core.record import Message, iter_records
from core.store import MessageStore, StoreConfig
from core.store.consumequeue import ENTRY, ENTRY_SIZE
from tests.fuzz.profiles import examples

pytestmark = [pytest.mark.fuzz, pytest.mark.component]

PER_FILE = 16
CONFIG = StoreConfig(
    segment_bytes=64 * 1024, max_message_bytes=16 * 1024, cq_entries_per_file=PER_FILE, warm_segments=False
)
QUEUES = {("a", 0), ("a", 1), ("b", 0)}
Contents = dict[tuple[str, int], list[bytes]]


def read_all(s: MessageStore) -> Contents:
    """Every record of every queue, as the store reads it; bytes that do not
    decode raise CorruptRecordError (the documented error)."""
    out: Contents = {}
    for topic, qid in sorted(QUEUES):
        lo, hi = s.queue_offsets(topic, qid)
        got: list[bytes] = []
        offset = lo
        for _ in range(4 * PER_FILE):  # a damaged queue may claim far more than it has
            if offset >= hi:
                break
            r = s.read(topic, qid, offset, 7, 64 * 1024)
            pos = 0
            for rec in iter_records(r.data):
                got.append(r.data[pos : pos + rec.size])
                pos += rec.size
            if r.next_queue_offset <= offset:
                break
            offset = r.next_queue_offset
        out[(topic, qid)] = got
    return out


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Contents]]:
    """A cleanly closed store with three queues over several ConsumeQueue
    files, and what each queue holds."""
    d = Path(tmp_path_factory.mktemp("cq")) / "store"
    s = MessageStore(d, CONFIG)
    s.create_topic("a", 2)
    s.create_topic("b", 1)
    for i in range(90):
        topic, qid = sorted(QUEUES)[i % 3]
        s.append([Message(topic, qid, bytes([i]) * (i * 37 % 900), tags=f"t{i % 4}")])
    contents = read_all(s)
    s.close()
    assert all(len(v) == 30 for v in contents.values())
    yield d, contents


def cq_files(d: Path) -> list[Path]:
    return sorted(p for p in (d / "consumequeue").rglob("*") if p.is_file())


@st.composite
def damage(draw: st.DrawFn, d: Path) -> tuple[str, Path, int, bytes]:
    """(how, which file, where, bytes) for one damage to a ConsumeQueue file."""
    files = cq_files(d)
    path = draw(st.sampled_from(files))
    size = PER_FILE * ENTRY_SIZE
    how = draw(st.sampled_from(["bytes", "entry", "truncate", "extend", "delete", "stray", "zero"]))
    where = draw(st.integers(0, size - 1))
    if how == "entry":  # one slot that points somewhere else, plausibly or not
        phys = draw(st.one_of(st.integers(0, 200_000), st.integers(0, (1 << 64) - 1)))
        length = draw(st.one_of(st.integers(0, 2000), st.integers(0, (1 << 32) - 1)))
        data = ENTRY.pack(phys, length, draw(st.integers(0, (1 << 64) - 1)))
        where -= where % ENTRY_SIZE
    elif how == "stray":
        data = draw(st.one_of(st.binary(max_size=64), st.binary(min_size=size, max_size=size)))
        where = draw(st.integers(0, 80))  # its first queue offset (its name)
    else:
        data = draw(st.binary(min_size=1, max_size=60))
    return how, path, where, data


def apply(how: str, path: Path, where: int, data: bytes) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        with path.open("r+b") as f:
            f.truncate(where)
    elif how == "extend":
        with path.open("ab") as f:
            f.write(data)
    elif how == "stray":
        (path.parent / f"{where:020d}").write_bytes(data)
    else:
        blob = bytes(len(data)) if how == "zero" else data
        with path.open("r+b") as f:
            f.seek(where)
            f.write(blob[: PER_FILE * ENTRY_SIZE - where])


def rebuild(d: Path) -> None:
    """The documented full rebuild (docs/design.md, Recovery)."""
    for name in ("checkpoint", "clean_shutdown"):
        (d / name).unlink(missing_ok=True)
    shutil.rmtree(d / "consumequeue", ignore_errors=True)


@settings(max_examples=examples(1))
@given(data=st.data(), unclean=st.booleans())
def test_a_damaged_consume_queue_reads_or_fails_as_corrupt_and_a_rebuild_repairs_it(
    golden: tuple[Path, Contents],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    unclean: bool,
) -> None:
    src, expected = golden
    d = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "store"
    shutil.copytree(src, d)
    try:
        how, path, where, blob = data.draw(damage(d))
        apply(how, path, where, blob)
        if unclean:
            (d / "clean_shutdown").unlink(missing_ok=True)
        try:
            s = MessageStore(d, CONFIG)
        except CorruptRecordError:
            event(f"{how}: refused at open")
        else:
            try:
                got = read_all(s)
                event(f"{how}: read {'as before' if got == expected else 'differently'}")
            except CorruptRecordError:
                event(f"{how}: a read is corrupt")
            finally:
                s.close()
        rebuild(d)
        with MessageStore(d, CONFIG) as s:
            assert read_all(s) == expected
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


# Found by fuzzing: `MessageStore.read` served what a ConsumeQueue entry
# points at without checking it: an entry whose record is gone (a pointer past
# the log read as "its segment was deleted") or empty (size 0 mid-queue) was
# skipped silently, and one pointing at another record served it. A consumer
# missed a message with no error. Now each entry is checked against the
# record's own header (size, magic, queue, queue offset, position).


@pytest.mark.parametrize(
    "slot",
    [ENTRY.pack(1 << 25, 30, 0), bytes(ENTRY_SIZE)],
    ids=["points-past-the-log", "zeroed-mid-queue"],
)
def test_a_damaged_entry_is_read_as_corrupt_not_skipped(
    golden: tuple[Path, Contents], tmp_path: Path, slot: bytes
) -> None:
    src, expected = golden
    d = tmp_path / "store"
    shutil.copytree(src, d)
    apply("bytes", d / "consumequeue" / "a" / "1" / f"{0:020d}", 9 * ENTRY_SIZE, slot)
    with MessageStore(d, CONFIG) as s:
        try:
            got = read_all(s)
        except CorruptRecordError:
            return
        assert got == expected, "a message was skipped with no error"
