"""Background pre-allocation (and pre-warming) of the next CommitLog segment.

When a segment becomes the one being written, the CommitLog asks for the next
one; a thread creates it (fallocate under a temporary name, then rename, so a
segment file always has its full size), maps it and, with `warm`, pre-faults
its pages. An append that rolls over takes the ready segment without touching
the file system. `misses` counts rollovers that had to wait.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from core.store.mapped import MappedFile

log = logging.getLogger(__name__)


def segment_name(start: int) -> str:
    return f"{start:020d}"


class SegmentAllocator:
    def __init__(self, directory: Path, segment_bytes: int, warm: bool) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.warm = warm
        self.misses = 0
        self.created = 0
        self._cond = threading.Condition()
        self._wanted: list[int] = []
        self._busy: int | None = None
        self._ready: dict[int, MappedFile] = {}
        self._errors: dict[int, BaseException] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="segment-allocator", daemon=True)
        self._thread.start()

    def request(self, start: int) -> None:
        """Ask for the segment starting at `start` to be made ready in the background."""
        with self._cond:
            if start in self._ready or start == self._busy or start in self._wanted:
                return
            self._wanted.append(start)
            self._cond.notify_all()

    def take(self, start: int, expected: bool = True) -> MappedFile:
        """The segment starting at `start`, created now if the thread has not made it.

        `expected` says the segment was requested ahead; only then does waiting
        for it count as a miss.
        """
        with self._cond:
            if start not in self._ready and start != self._busy:
                if start in self._wanted:
                    self._wanted.remove(start)
                self.misses += expected
                return self._create(start)
            if start not in self._ready:
                self.misses += expected
            while start not in self._ready and start not in self._errors:
                self._cond.wait()
            err = self._errors.pop(start, None)
            if err is not None:
                raise err
            return self._ready.pop(start)

    def _create(self, start: int) -> MappedFile:
        seg = MappedFile.create(self.directory / segment_name(start), self.segment_bytes)
        if self.warm:
            seg.warm()
        self.created += 1
        return seg

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                start = self._wanted.pop(0)
                self._busy = start
            try:
                seg = self._create(start)
            except BaseException as exc:  # surfaced to the appender in take()
                log.error("pre-allocating segment %s failed: %s", segment_name(start), exc)
                with self._cond:
                    self._errors[start] = exc
                    self._busy = None
                    self._cond.notify_all()
                continue
            with self._cond:
                self._ready[start] = seg
                self._busy = None
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread; unused ready segments stay on disk (all zeros)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            for seg in self._ready.values():
                seg.close()
            self._ready.clear()
