"""Master -> slave replication as plain objects (no sockets, threads or clock).

A slave opens with a `Handshake`; the master's `MasterSession` checks it
(cluster, group, shared secret) and answers where to start (the slave's own
end, or a truncation point when the slave holds bytes the master does not);
the slave repeats that arithmetic over both epoch histories and refuses a
reply that would cut or restart more than they prove.
Then the master sends `Chunk`s of CommitLog bytes (whole records of one
segment, with the master's confirmed offset) and the slave answers each with
an `Ack` of its new end and flushed offset. `ReplicaSet` keeps every slave's
progress and says which are in sync and how far writes are confirmed
(core/replicas.py).
The gRPC adapters (master/replication_service.py, slave/replicator.py) move
these objects over a bidirectional stream; tests join the two sides in
memory (`tests/unit/test_replication.py`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Protocol

from core.epochs import History, divergence_point, history_fault
from core.errors import CorruptRecordError, ReplicationDeniedError, ReplicationError, brief
from core.replicas import ReplicaSet, ReplicaState
from core.store import MessageStore


class EpochSource(Protocol):
    """A slave's epoch history, and what to do when its log is cut or restarted."""

    def epoch_history(self) -> History: ...

    def newest_epoch(self) -> int:
        """The newest master epoch this broker knows was elected: chunks of an
        older master are refused (fencing)."""
        ...

    def truncating(self, offset: int) -> None:
        """About to cut the log at `offset`: undo applied state of the cut part
        first (so a crash in between leaves it undone; the cut is redone on the
        next handshake)."""
        ...

    def adopt(self, history: list[tuple[int, int]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Handshake:
    cluster: str
    group: str
    broker_id: int
    max_offset: int
    secret: str = field(repr=False)  # never in a log line
    epoch: int = 0
    history: History = ()  # the slave's epoch history


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    start_offset: int
    truncate_to: int  # -1: keep everything
    master_max: int
    confirmed: int
    history: History = ()  # the master's epoch history


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: bytes
    epoch: int
    confirmed: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What an idle stream carries: the master's end and confirmed offset,
    and its retention floor (-1: nothing held back)."""

    master_max: int
    confirmed: int
    retention_floor: int = -1


@dataclass(frozen=True, slots=True)
class Ack:
    max_offset: int
    flushed_offset: int


class MasterSession:
    """One slave's stream, on the master."""

    def __init__(
        self,
        store: MessageStore,
        replicas: ReplicaSet,
        cluster: str,
        group: str,
        secret: str | None,
        chunk_bytes: int,
        epoch: int = 0,
        history: History = (),
    ) -> None:
        """`secret`: the shared cluster secret a slave must present; None when
        the slave is proven by its member certificate (mutual TLS)."""
        self.history = history
        self.store = store
        self.replicas = replicas
        self.cluster = cluster
        self.group = group
        self.secret = secret
        self.chunk_bytes = chunk_bytes
        self.epoch = epoch
        self.next_offset = 0
        self.state: ReplicaState | None = None

    def handshake(self, hs: Handshake, now_ms: int, confirmed: int) -> HandshakeReply:
        if self.secret is not None:
            if not self.secret:
                raise ReplicationDeniedError(
                    "no cluster secret (nor TLS) is configured on the master: replication is refused"
                )
            if not hmac.compare_digest(hs.secret.encode(), self.secret.encode()):
                raise ReplicationDeniedError("wrong cluster secret")
        if (hs.cluster, hs.group) != (self.cluster, self.group):
            raise ReplicationError(
                f"slave of {brief(hs.cluster)}/{brief(hs.group)} cannot replicate from "
                f"{self.cluster}/{self.group}"
            )
        if hs.broker_id <= 0:
            raise ReplicationError(f"a slave needs a broker id > 0, got {hs.broker_id}")
        slave_epoch = hs.history[-1][0] if hs.history else 0
        if slave_epoch > self.epoch:
            raise ReplicationError(
                f"this broker (epoch {self.epoch}) is behind the slave (epoch {slave_epoch}): not the master"
            )
        master_max = self.store.commitlog.max_offset
        master_min = self.store.commitlog.min_offset
        truncate_to = -1
        # the slave keeps what agrees with this log (epoch histories); a slave
        # holding bytes this master does not have loses them
        start = divergence_point(self.history, master_max, hs.history, hs.max_offset)
        if start < hs.max_offset:
            truncate_to = start
        if start < master_min:  # a new (or far behind) slave starts at the oldest segment
            start = master_min
        elif start < master_max:  # where a slave's log ends is where a record of this log starts
            try:
                self.store.read_log(start, 1)
            except CorruptRecordError as exc:
                raise ReplicationError(
                    f"slave {hs.broker_id} claims its log ends at {start}, where no record of this log starts"
                ) from exc
        self.next_offset = start
        self.state = self.replicas.attach(hs.broker_id, start, now_ms)
        return HandshakeReply(start, truncate_to, master_max, confirmed, self.history)

    def next_chunk(self, confirmed: int) -> Chunk | None:
        """The next bytes for this slave (None when it has everything), carrying
        the master's `confirmed` offset."""
        data, nxt = self.store.read_log(self.next_offset, self.chunk_bytes)
        if not data:
            return None
        chunk = Chunk(self.next_offset, data, self.epoch, confirmed)
        self.next_offset = nxt
        return chunk

    def heartbeat(self, confirmed: int, retention_floor: int | None = None) -> Heartbeat:
        """For an idle stream (the slave has everything): keeps it in sync and
        tells it how far the log is confirmed, and what retention keeps."""
        floor = -1 if retention_floor is None else retention_floor
        return Heartbeat(self.store.commitlog.max_offset, confirmed, floor)

    def on_ack(self, ack: Ack, now_ms: int) -> None:
        if self.state is None:
            raise ReplicationError("ack before handshake")
        if ack.max_offset > self.store.commitlog.max_offset:
            raise ReplicationError(
                f"ack of {ack.max_offset} beyond the master's end {self.store.commitlog.max_offset}"
            )
        if ack.max_offset > self.next_offset or ack.flushed_offset > ack.max_offset:
            raise ReplicationError(
                f"ack of {ack.max_offset} for bytes never sent (sent to {self.next_offset})"
            )
        self.replicas.ack(self.state, ack, now_ms)

    def close(self) -> None:
        if self.state is not None:
            self.replicas.detach(self.state.broker_id, self.state)


class SlaveSession:
    """The slave's side of one stream."""

    def __init__(
        self,
        store: MessageStore,
        cluster: str,
        group: str,
        broker_id: int,
        secret: str,
        epochs: EpochSource | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.group = group
        self.broker_id = broker_id
        self.secret = secret
        self.epochs = epochs
        self.confirmed = 0  # what the master says is safe to serve (capped by this log's end)
        self.master_max = 0  # the master's end, as last heard
        # what the master's retention keeps (its floor): until it says, keep everything
        self.master_floor: int | None = 0

    def handshake(self) -> Handshake:
        history = self.epochs.epoch_history() if self.epochs is not None else ()
        return Handshake(
            self.cluster,
            self.group,
            self.broker_id,
            self.store.commitlog.max_offset,
            self.secret,
            history[-1][0] if history else 0,
            history,
        )

    def on_handshake_reply(self, reply: HandshakeReply) -> None:
        """Cut or restart this log only as far as the epoch histories prove.

        The slave repeats the master's arithmetic (`divergence_point` over the
        master's history and end and its own) and acts only on a reply that
        matches it: a cut to exactly that point (or none when its whole log
        agrees), then a start there, or a restart (`reset_log`) past it when
        the master no longer holds what comes next (retention). Anything else
        raises ReplicationError before anything changes; the replicator logs
        it and retries.

        A cut above the proven point (or "keep everything" when the histories
        say the tail diverges) is refused, not capped: an honest master gets
        the same point from the same inputs, so another answer means a bug or
        a history one side has wrong. Keeping the unproven bytes could leave a
        log that differs from the master's in the middle; capping would leave
        the master's start offset, computed from its own point, past this
        log's end, where it reads as a restart behind retention and wipes the
        log."""
        mine = self.store.commitlog.max_offset
        proven = self._proven_point(reply)
        start = reply.start_offset
        if proven < mine:
            if self.epochs is not None:
                self.epochs.truncating(proven)
            self.store.truncate_to(proven)
        if start > proven:
            # the master no longer has what this log needs next (retention):
            # start again, empty, at the master's oldest offset
            self.store.reset_log(start)
            if self.epochs is not None:
                self.epochs.adopt([x for x in reply.history if x[1] <= start])
        self.confirmed = min(reply.confirmed, self.store.commitlog.max_offset)
        self.master_max = reply.master_max

    def _proven_point(self, reply: HandshakeReply) -> int:
        """Where the histories prove this log agrees with the master's, once
        the reply is checked against it (ReplicationError, nothing changed)."""
        clog = self.store.commitlog
        mine = clog.max_offset
        own = self.epochs.epoch_history() if self.epochs is not None else ()
        newest = self.epochs.newest_epoch() if self.epochs is not None else 0
        fault = history_fault(reply.history, reply.master_max)
        if fault:
            raise ReplicationError(f"the master's epoch history is malformed ({fault}): refused")
        last = reply.history[-1][0] if reply.history else 0
        if last < newest:
            raise ReplicationError(
                f"the master's history ends in epoch {last}; epoch {newest} has been elected: refused"
            )
        proven = divergence_point(reply.history, reply.master_max, own, mine)
        keep = mine if reply.truncate_to < 0 else reply.truncate_to
        if keep < proven:
            raise ReplicationError(
                f"master would cut this log to {keep}, below {proven}, "
                "where the epoch histories prove it agrees with the master's: refused"
            )
        if keep > proven:
            raise ReplicationError(
                f"master would keep this log to {keep}, "
                f"but the epoch histories prove it agrees with the master's only to {proven}: refused"
            )
        if proven < clog.min_offset:
            raise ReplicationError(
                f"the epoch histories prove this log agrees with the master's to {proven}, "
                f"before its own start {clog.min_offset}: it cannot be cut there"
            )
        start = reply.start_offset
        if start < proven:
            raise ReplicationError(f"master would start at {start}, this log ends at {proven}")
        if start > proven:  # this log agrees up to its (cut) end: a restart only skips ahead
            if start > reply.master_max:
                raise ReplicationError(
                    f"master would restart this log at {start}, past its own end {reply.master_max}: refused"
                )
            if start % clog.segment_bytes:
                raise ReplicationError(
                    f"master would restart this log at {start}, not at a segment boundary: refused"
                )
        return proven

    def on_chunk(self, chunk: Chunk) -> Ack:
        newest = self.epochs.newest_epoch() if self.epochs is not None else 0
        if chunk.epoch < newest:  # fencing: an older master's chunk
            raise ReplicationError(f"chunk of master epoch {chunk.epoch}; epoch {newest} has been elected")
        if chunk.offset != self.store.commitlog.max_offset:
            raise ReplicationError(
                f"chunk at {chunk.offset}, this log ends at {self.store.commitlog.max_offset}"
            )
        end = self.store.append_replicated(chunk.offset, chunk.data)
        self.confirmed = max(self.confirmed, min(chunk.confirmed, end))
        self.master_max = max(self.master_max, end)
        return Ack(end, self.store.commitlog.flushed)

    def on_heartbeat(self, hb: Heartbeat) -> Ack:
        """Heartbeats are acked too: an idle slave stays in the in-sync set."""
        clog = self.store.commitlog
        self.master_max = hb.master_max
        self.master_floor = None if hb.retention_floor < 0 else hb.retention_floor
        self.confirmed = max(self.confirmed, min(hb.confirmed, clog.max_offset))
        return Ack(clog.max_offset, clog.flushed)
