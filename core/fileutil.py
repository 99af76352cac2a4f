"""Durable file writes: a small file replaced atomically, a directory entry synced.

Kept out of `core/store` because brokers, the controller and the offset and
epoch tables write their own small state files the same way and need nothing
else of the store.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a create, rename or unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` or raise OSError.

    A short write is legal (POSIX): the rest goes in the next call, which then
    reports why the first stopped (ENOSPC, EFBIG under a file-size limit, ...).
    A call that writes nothing at all is a failure too, never a loop."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, f"short write: {len(data) - len(view)} of {len(data)} bytes written")
        view = view[n:]


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new
    content, never a mix: write `path.tmp` (created with `mode`), fsync it,
    rename it over `path`, fsync the directory.

    Any failure before the rename (a short or failed write, a failed fsync
    or rename) raises OSError, leaves `path` as it was and removes the temp
    file. A failed directory fsync after the rename also raises: the new
    content is then in place but not known durable."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover would keep its old mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
