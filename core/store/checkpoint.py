"""Small durable files beside the log: checkpoint, clean-shutdown marker, lock.

checkpoint (32 bytes, big-endian): magic u32, version u32, commitlog flushed
offset u64, dispatched offset u64 (every record below it has its ConsumeQueue
entry flushed), CRC32 of the preceding 24 bytes u32, padding. Written to a
temporary file, fsynced, renamed over the old one, directory fsynced.

clean_shutdown: JSON `{"end_offset": N}` written last on a clean close and
removed (durably) when the store opens; its absence at open means the last
stop was unclean.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from core.errors import StoreLockedError
from core.fileutil import atomic_write, fsync_dir

_CKPT = struct.Struct(">IIQQ")
_CKPT_MAGIC = 0x54524350  # "TRCP"
_CKPT_VERSION = 1
CHECKPOINT = "checkpoint"
CLEAN_MARKER = "clean_shutdown"
LOCK = "lock"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    commitlog_flushed: int = 0
    dispatched: int = 0


def write_checkpoint(directory: Path, ckpt: Checkpoint) -> None:
    head = _CKPT.pack(_CKPT_MAGIC, _CKPT_VERSION, ckpt.commitlog_flushed, ckpt.dispatched)
    atomic_write(directory / CHECKPOINT, head + struct.pack(">I", zlib.crc32(head)) + bytes(4))


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The last checkpoint, or None if there is none or it does not verify."""
    try:
        data = (directory / CHECKPOINT).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _CKPT.size + 4:
        return None
    head = data[: _CKPT.size]
    (crc,) = struct.unpack_from(">I", data, _CKPT.size)
    magic, version, flushed, dispatched = _CKPT.unpack(head)
    if magic != _CKPT_MAGIC or version != _CKPT_VERSION or crc != zlib.crc32(head):
        return None
    return Checkpoint(flushed, dispatched)


def write_clean_marker(directory: Path, end_offset: int) -> None:
    atomic_write(directory / CLEAN_MARKER, json.dumps({"end_offset": end_offset}).encode())


def take_clean_marker(directory: Path) -> int | None:
    """Read and durably remove the marker; the log end it recorded, or None."""
    path = directory / CLEAN_MARKER
    try:
        data = json.loads(path.read_bytes())
        end = int(data["end_offset"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        end = None  # a damaged marker means nothing is known: recover as unclean (1e999 is infinity)
    path.unlink()
    fsync_dir(directory)
    return end


class DirLock:
    """An exclusive flock on `<dir>/lock`, so two processes never share a store."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            raise StoreLockedError(f"{directory} is in use by another process") from exc
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
