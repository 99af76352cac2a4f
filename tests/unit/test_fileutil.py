"""atomic_write: every write checked, the file and its directory synced,
nothing left behind and the old file intact when it fails (issue 16)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import core.fileutil as fileutil
from core.fileutil import atomic_write

pytestmark = pytest.mark.unit
OLD = b'{"topics": {"t": {"queues": 4}}}'
NEW = b'{"topics": {"t": {"queues": 8}, "u": {"queues": 2}}}'


def fake_write(monkeypatch: pytest.MonkeyPatch, fn: Callable[[int, bytes], int]) -> None:
    monkeypatch.setattr(fileutil.os, "write", fn)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_write_that_fails_half_way_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "topics.json"
    atomic_write(path, OLD)
    real = os.write
    calls = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data)[: len(data) // 2])  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    fake_write(monkeypatch, half_then_full)
    with pytest.raises(OSError) as info:
        atomic_write(path, NEW)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


def test_a_write_that_makes_no_progress_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "offsets.json"
    atomic_write(path, OLD)
    fake_write(monkeypatch, lambda fd, data: 0)
    with pytest.raises(OSError, match="short write"):
        atomic_write(path, NEW)
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


def test_short_writes_that_complete_give_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSIX lets a write return short: the rest is written by the next call."""
    path = tmp_path / "epochs.json"
    real = os.write
    fake_write(monkeypatch, lambda fd, data: real(fd, bytes(data)[:7]))
    atomic_write(path, NEW)
    assert path.read_bytes() == NEW and leftovers(tmp_path) == []


def test_a_failed_fsync_or_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "controller.json"
    atomic_write(path, OLD)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fileutil.os, "fsync", eio)
    with pytest.raises(OSError):
        atomic_write(path, NEW)
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []
    monkeypatch.undo()

    def no_rename(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(fileutil.os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_write(path, NEW)
    assert path.read_bytes() == OLD and leftovers(tmp_path) == []


def test_the_file_and_its_directory_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(fileutil.os, "fsync", spy)
    atomic_write(tmp_path / "topics.json", NEW)
    assert synced == [str(tmp_path / "topics.json.tmp"), str(tmp_path)]
