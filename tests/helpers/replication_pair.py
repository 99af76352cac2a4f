"""A master and a slave joined in memory (no sockets): the replication
protocol's unit tests (test_replication.py, test_replication_proof.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from core.record import Message
from core.replicas import ReplicaSet
from core.replication import (
    Chunk,
    MasterSession,
    SlaveSession,
)
from core.store import MessageStore

Open = Callable[..., MessageStore]
SECRET = "s3cret"


class Pair:
    """A master session and a slave session joined in memory."""

    def __init__(
        self,
        master: MessageStore,
        slave: MessageStore,
        chunk_bytes: int = 4096,
        history: tuple[tuple[int, int], ...] = (),  # the master's epoch history
        epochs: FakeEpochs | None = None,  # the slave's
    ) -> None:
        self.master, self.slave = master, slave
        self.replicas = ReplicaSet(max_lag_bytes=1 << 20, max_ack_age_ms=10_000)
        epoch = history[-1][0] if history else 0
        self.m = MasterSession(master, self.replicas, "c", "g", SECRET, chunk_bytes, epoch, history)
        self.s = SlaveSession(slave, "c", "g", 1, SECRET, epochs)
        self.now = 0
        self.chunks: list[Chunk] = []
        self.s.on_handshake_reply(self.m.handshake(self.s.handshake(), self.now, confirmed=0))

    def pump(self) -> int:
        """Move chunks until the slave has everything; returns how many moved."""
        n = 0
        while (chunk := self.m.next_chunk(self.master.commitlog.max_offset)) is not None:
            self.chunks.append(chunk)
            self.now += 1
            self.m.on_ack(self.s.on_chunk(chunk), self.now)
            n += 1
        return n


def log_hash(store: MessageStore, upto: int | None = None) -> str:
    clog = store.commitlog
    end = clog.max_offset if upto is None else upto
    h = hashlib.sha256()
    pos = clog.min_offset
    while pos < end:
        seg_end = min(end, pos - pos % clog.segment_bytes + clog.segment_bytes)
        view = clog.view(pos, seg_end - pos)
        assert view is not None
        h.update(view)
        pos = seg_end
    return h.hexdigest()


def fill(store: MessageStore, n: int, topic: str = "t", size: int = 900) -> None:
    store.create_topic(topic, 3)
    for i in range(0, n, 10):
        store.append(
            [
                Message(topic, j % 3, f"{j}:".encode() * (size // 6), tags=f"g{j % 2}")
                for j in range(i, i + 10)
            ]
        )


class FakeEpochs:
    """An EpochSource over a tuple (the broker's own is BrokerCore): records
    the cuts it was told of."""

    def __init__(self, history: tuple[tuple[int, int], ...] = (), newest: int = 0) -> None:
        self.history = history
        self.newest = newest
        self.cuts: list[int] = []

    def epoch_history(self) -> tuple[tuple[int, int], ...]:
        return self.history

    def newest_epoch(self) -> int:
        return max(self.newest, self.history[-1][0] if self.history else 0)

    def truncating(self, offset: int) -> None:
        self.cuts.append(offset)
        self.history = tuple(x for x in self.history if x[1] < offset)

    def adopt(self, history: list[tuple[int, int]]) -> None:
        self.history = tuple(history)
