"""A fixed-size file mapped read-write, plus the page-cache calls Python lacks.

`madvise` goes through ctypes rather than `mmap.madvise` because ctypes
releases the GIL: pre-faulting a 1 GiB segment takes seconds on a VM, and
appenders on other threads must not wait for it. Flushing a written range is
`msync(MS_SYNC)` through ctypes for the same reason (`mmap.flush` holds the
GIL); whole-file flushes use `os.fdatasync`, which releases it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from pathlib import Path

from core.fileutil import fsync_dir

PAGE = mmap.PAGESIZE
MADV_WILLNEED = 3
MADV_POPULATE_WRITE = 23  # Linux 5.14+; Python 3.11's mmap module lacks the name
MS_SYNC = 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.msync.restype = ctypes.c_int
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
    """A file of exactly `size` bytes, mapped shared read-write.

    `reserved_lo`/`reserved_hi` bound the bytes known to have disk blocks
    behind them (the whole file unless it was created sparse). Writing
    through the mapping into a hole when the disk is full kills the process
    with SIGBUS, so a writer of a sparse file `reserve`s a range before
    writing into it: ENOSPC then comes back as an OSError.

    With `keep_fd` false the descriptor is closed once the file is mapped
    (the mapping keeps the file open): one descriptor per file instead of
    two, for the many small ConsumeQueue files. `sync` then uses msync.
    """

    __slots__ = ("fd", "mm", "path", "reserved_hi", "reserved_lo", "size", "view")

    def __init__(
        self, path: Path, size: int, create: bool = False, sparse: bool = False, keep_fd: bool = True
    ) -> None:
        self.path = path
        self.size = size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o644)
        try:
            if create and sparse:
                os.ftruncate(self.fd, size)  # no blocks: `reserve` before writing
            elif create:
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
        if not keep_fd:
            os.close(self.fd)  # mmap holds its own duplicate
            self.fd = -1
        self.reserved_lo = 0
        self.reserved_hi = 0 if create and sparse else size
        self.view = memoryview(self.mm)

    @classmethod
    def create(cls, path: Path, size: int, sparse: bool = False, keep_fd: bool = True) -> MappedFile:
        """Create a full-size file atomically: a crash leaves either no file at
        `path` or one of exactly `size` bytes (plus, maybe, `path.tmp`)."""
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        f = cls(tmp, size, create=True, sparse=sparse, keep_fd=keep_fd)
        try:
            os.link(tmp, path)  # unlike rename, never replaces an existing file
        except BaseException:
            f.close()
            tmp.unlink()
            raise
        tmp.unlink()
        f.path = path
        fsync_dir(path.parent)
        return f

    def reserve(self, start: int, end: int) -> None:
        """Give bytes [start, end) disk blocks (posix_fallocate), so writing
        them through the mapping cannot fault on a full disk; the reserved
        range becomes one run covering the old one and this. Raises OSError
        (ENOSPC) instead."""
        lo, hi = self.reserved_lo, self.reserved_hi
        if lo == hi:
            todo, lo, hi = [(start, end)], start, end
        else:
            todo = [r for r in ((start, lo), (hi, end)) if r[0] < r[1]]
            lo, hi = min(lo, start), max(hi, end)
        if todo:
            fd = self.fd if self.fd >= 0 else os.open(self.path, os.O_RDWR)
            try:
                for a, b in todo:
                    os.posix_fallocate(fd, a, b - a)
            finally:
                if fd != self.fd:
                    os.close(fd)
        self.reserved_lo, self.reserved_hi = lo, hi

    def touch(self, start: int, length: int) -> None:
        """Fault pages in by reading one byte of each (never writes)."""
        mm = self.mm
        for off in range(start - start % PAGE, min(self.size, start + length), PAGE):
            mm[off]

    def sync(self) -> None:
        if self.fd >= 0:
            os.fdatasync(self.fd)
        else:
            self.sync_range(0, self.size)

    def sync_range(self, start: int, end: int) -> None:
        """msync(MS_SYNC) of bytes [start, end) only, without holding the GIL.

        Unlike fdatasync it leaves the rest of the file alone: pages a warmer
        dirtied ahead of the writer stay writable, so the writer does not
        fault on them again.
        """
        start -= start % PAGE
        length = min(self.size, end) - start
        if length <= 0:
            return
        buf = (ctypes.c_char * length).from_buffer(self.mm, start)
        try:
            rc = _libc.msync(ctypes.addressof(buf), length, MS_SYNC)
        finally:
            del buf
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def close(self) -> None:
        """Close the descriptor and unmap; if a reader still holds a slice of
        the mapping, the last reference unmaps it instead."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.view.release()
            self.mm.close()
        except BufferError:
            pass


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


def data_end(path: Path, start: int, end: int) -> int:
    """Where the last data extent of `path` within [start, end) ends (`start`
    if none): holes read as zeroes, so a scan for non-zero bytes can stop
    there. Falls back to `end` where the filesystem cannot tell."""
    fd = os.open(path, os.O_RDONLY)
    try:
        last = pos = start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                return end
            if data >= end:
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
            last = min(pos, end)
        return last
    finally:
        os.close(fd)
