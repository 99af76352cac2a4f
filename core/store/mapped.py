"""A fixed-size file mapped read-write, plus the page-cache calls Python lacks.

`madvise` goes through ctypes rather than `mmap.madvise` because ctypes
releases the GIL: pre-faulting a 1 GiB segment takes tens of milliseconds
that appenders on other threads must not wait for. Flushing uses
`os.fdatasync` (also GIL-free); on Linux it writes back pages dirtied through a
shared mapping exactly like `msync`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path

PAGE = mmap.PAGESIZE
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_POPULATE_WRITE = 23  # Linux 5.14+; Python 3.11's mmap module lacks the name

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.mincore.restype = ctypes.c_int
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def madvise(mm: mmap.mmap, advice: int, start: int = 0, length: int | None = None) -> None:
    """madvise(2) on part of a mapping, without holding the GIL. Raises OSError."""
    if length is None:
        length = len(mm) - start
    if length <= 0:
        return
    buf = (ctypes.c_char * length).from_buffer(mm, start)
    try:
        rc = _libc.madvise(ctypes.addressof(buf), length, advice)
    finally:
        del buf
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class MappedFile:
    """A file of exactly `size` bytes, mapped shared read-write."""

    __slots__ = ("fd", "mm", "path", "size", "view")

    def __init__(self, path: Path, size: int, create: bool = False) -> None:
        self.path = path
        self.size = size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o644)
        try:
            if create:
                # Real blocks, not a sparse file: writing through a mapping into
                # a hole when the disk is full would kill the process with SIGBUS.
                os.posix_fallocate(self.fd, 0, size)
            actual = os.fstat(self.fd).st_size
            if actual != size:
                raise OSError(f"{path} is {actual} bytes, expected {size}")
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self.mm)

    @classmethod
    def create(cls, path: Path, size: int) -> MappedFile:
        """Create a full-size file atomically: a crash leaves either no file at
        `path` or one of exactly `size` bytes (plus, maybe, `path.tmp`)."""
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        f = cls(tmp, size, create=True)
        os.rename(tmp, path)
        f.path = path
        fsync_dir(path.parent)
        return f

    def warm(self) -> None:
        """Fault in every page writable and ask for read-ahead, then flush the
        (zero) pages so the first real fdatasync does not write them all."""
        try:
            madvise(self.mm, MADV_POPULATE_WRITE)
        except OSError:
            # Older kernels: touch one byte per page (writes a zero over a zero).
            mm = self.mm
            for off in range(0, self.size, PAGE):
                mm[off] = 0
        with contextlib.suppress(OSError):
            madvise(self.mm, MADV_WILLNEED)
        os.fdatasync(self.fd)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        self.view.release()
        self.mm.close()
        os.close(self.fd)


def resident_bytes(path: Path) -> int:
    """How many bytes of `path` are in the page cache (mincore on a private map)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            return sum(b & 1 for b in bytes(vec)) * PAGE
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    """Drop a file's clean pages from the page cache.

    Works only on pages nobody maps and that are not dirty: close the store (or
    unmap) and flush first; posix_fadvise(DONTNEED) skips mapped pages.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
