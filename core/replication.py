"""Master -> slave replication as plain objects (no sockets, threads or clock).

A slave opens with a `Handshake`; the master's `MasterSession` checks it
(cluster, group, shared secret) and answers where to start (the slave's own
end, or a truncation point when the slave holds bytes the master does not).
Then the master sends `Chunk`s of CommitLog bytes (whole records of one
segment, with the master's confirmed offset) and the slave answers each with
an `Ack` of its new end and flushed offset. `ReplicaSet` keeps every slave's
progress and says which are in sync and how far writes are confirmed.
The gRPC adapters (master/replication_service.py, slave/replicator.py) move
these objects over a bidirectional stream; tests join the two sides in
memory (`tests/unit/test_replication.py`).
"""

from __future__ import annotations

import hmac
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core.epochs import History, divergence_point
from core.errors import ReplicationDeniedError, ReplicationError
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
    """What an idle stream carries: the master's end and confirmed offset."""

    master_max: int
    confirmed: int


@dataclass(frozen=True, slots=True)
class Ack:
    max_offset: int
    flushed_offset: int


@dataclass(slots=True)
class ReplicaState:
    broker_id: int
    acked: int = 0
    flushed: int = 0
    last_ack_ms: int = 0
    connected: bool = True


class ReplicaSet:
    """Every slave's progress, as the master sees it (thread-safe)."""

    def __init__(
        self, max_lag_bytes: int, max_ack_age_ms: int, on_ack: Callable[[], None] | None = None
    ) -> None:
        self.on_ack = on_ack
        self.max_lag_bytes = max_lag_bytes
        self.max_ack_age_ms = max_ack_age_ms
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._replicas: dict[int, ReplicaState] = {}
        # failover mode (a controller elects from the in-sync set): sync writes
        # wait for every `required` slave. A slave joins `required` here once
        # it has every acknowledged write (acked >= hw); it leaves only when the
        # controller has confirmed a set without it, so every slave the
        # controller may elect holds every acknowledged write.
        self.failover = False
        self.hw = 0  # end of the highest acknowledged sync write
        self._confirmed_set: frozenset[int] = frozenset()
        self._added: dict[int, int] = {}  # node -> proposal generation it was added in
        self._gen = 0

    @property
    def attached(self) -> bool:
        """Whether any slave ever attached (read without the lock: a hint)."""
        return bool(self._replicas)

    def attach(self, broker_id: int, offset: int, now_ms: int) -> ReplicaState:
        with self._lock:
            st = ReplicaState(broker_id, offset, offset, now_ms)
            self._replicas[broker_id] = st
            self._cond.notify_all()
            return st

    def detach(self, broker_id: int, st: ReplicaState) -> None:
        with self._lock:
            if self._replicas.get(broker_id) is st:
                st.connected = False
            self._cond.notify_all()

    def ack(self, st: ReplicaState, ack: Ack, now_ms: int) -> None:
        with self._lock:
            st.acked = max(st.acked, ack.max_offset)
            st.flushed = max(st.flushed, ack.flushed_offset)
            st.last_ack_ms = now_ms
            if self.failover and st.broker_id not in self._required() and st.acked >= self.hw:
                self._added[st.broker_id] = self._gen + 1  # caught up: writes wait for it from now
            self._cond.notify_all()
        if self.on_ack is not None:
            self.on_ack()

    def in_sync(self, master_max: int, now_ms: int) -> list[ReplicaState]:
        with self._lock:
            return self._in_sync(master_max, now_ms)

    def _in_sync(self, master_max: int, now_ms: int) -> list[ReplicaState]:
        return [
            r
            for r in self._replicas.values()
            if r.connected
            and master_max - r.acked <= self.max_lag_bytes
            and now_ms - r.last_ack_ms <= self.max_ack_age_ms
        ]

    def confirmed(self, master_max: int, min_replicas: int, now_ms: int) -> int:
        """The offset `min_replicas` in-sync slaves have all acked (master_max
        when no slave is required)."""
        with self._lock:
            return self._confirmed(master_max, min_replicas, now_ms)

    def _confirmed(self, master_max: int, min_replicas: int, now_ms: int) -> int:
        if min_replicas <= 0:
            return master_max
        acks = sorted((r.acked for r in self._in_sync(master_max, now_ms)), reverse=True)
        return min(acks[min_replicas - 1], master_max) if len(acks) >= min_replicas else 0

    def wait_acked(self, offset: int, min_replicas: int, timeout_s: float) -> bool:
        """Block until `min_replicas` connected slaves have acked `offset` (or time out)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    sum(1 for r in self._replicas.values() if r.connected and r.acked >= offset)
                    >= min_replicas
                ),
                timeout_s,
            )

    # ---- failover mode: the required set --------------------------------------------

    def reset_required(self, hw: int) -> None:
        """A new mastership: nobody is required until caught up to `hw`."""
        with self._lock:
            self.failover = True
            self.hw = hw
            self._confirmed_set = frozenset()
            self._added.clear()
            self._gen += 1

    def _required(self) -> frozenset[int]:
        return self._confirmed_set | self._added.keys()

    def required(self) -> frozenset[int]:
        with self._lock:
            return self._required()

    def propose(self, master_max: int, now_ms: int) -> tuple[int, frozenset[int]]:
        """The in-sync set to report to the controller: required slaves still
        in sync (the others are dropped once the controller confirms)."""
        with self._lock:
            self._gen += 1
            # in sync, and holding every acknowledged write (a slave that came
            # back with a shorter log is not, until it has caught up again)
            live = {r.broker_id for r in self._in_sync(master_max, now_ms) if r.acked >= self.hw}
            return self._gen, self._required() & live

    def confirm(self, gen: int, confirmed: frozenset[int]) -> None:
        """The controller stored the proposal of generation `gen`."""
        with self._lock:
            self._confirmed_set = confirmed
            self._added = {n: g for n, g in self._added.items() if g > gen and n not in confirmed}
            self._cond.notify_all()

    def required_ready(self, min_replicas: int, master_max: int, now_ms: int) -> bool:
        """Whether a sync write can be acknowledged now: enough required
        slaves, all of them in sync."""
        with self._lock:
            req = self._required()
            live = {r.broker_id for r in self._in_sync(master_max, now_ms)}
            return len(req) >= min_replicas and req <= live

    def safe_offset(self, master_max: int, min_replicas: int) -> int:
        """Below this offset every slave the controller may elect has the log:
        the highest acknowledged write, or what every required slave acked."""
        with self._lock:
            req = self._required()
            acked = [self._replicas[n].acked if n in self._replicas else 0 for n in req]
            floor = min(acked) if acked and len(acked) >= max(1, min_replicas) else 0
            return min(master_max, max(self.hw, floor))

    def wait_required(self, offset: int, min_replicas: int, timeout_s: float) -> bool:
        """Block until every required slave (at least `min_replicas`) acked `offset`."""

        def done() -> bool:
            req = self._required()
            if len(req) < min_replicas:
                return False
            for node in req:
                r = self._replicas.get(node)
                if r is None or not r.connected or r.acked < offset:
                    return False
            self.hw = max(self.hw, offset)
            return True

        with self._cond:
            return self._cond.wait_for(done, timeout_s)

    def snapshot(self) -> list[ReplicaState]:
        with self._lock:
            return [
                ReplicaState(r.broker_id, r.acked, r.flushed, r.last_ack_ms, r.connected)
                for r in self._replicas.values()
            ]


class AckLag:
    """How long appends wait for their first slave ack (append -> ack, ms).

    The master notes (end offset, time) per append; an ack covering an end
    turns it into a lag sample. Bounded: old pending appends and samples are
    dropped."""

    def __init__(self, keep: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, int]] = deque(maxlen=keep)
        self._samples: deque[int] = deque(maxlen=keep)

    def appended(self, end: int, now_ms: int) -> None:
        with self._lock:
            self._pending.append((end, now_ms))

    def acked(self, offset: int, now_ms: int) -> None:
        with self._lock:
            while self._pending and self._pending[0][0] <= offset:
                _, t = self._pending.popleft()
                self._samples.append(now_ms - t)

    def percentiles(self) -> dict[str, float]:
        with self._lock:
            s = sorted(self._samples)
        if not s:
            return {"samples": 0}

        def pick(p: int) -> float:
            return s[min(len(s) - 1, int(p / 100 * len(s)))]

        return {"samples": len(s), "p50_ms": pick(50), "p99_ms": pick(99), "max_ms": s[-1]}


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
                f"slave of {hs.cluster}/{hs.group} cannot replicate from {self.cluster}/{self.group}"
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

    def heartbeat(self, confirmed: int) -> Heartbeat:
        """For an idle stream (the slave has everything): keeps it in sync and
        tells it how far the log is confirmed."""
        return Heartbeat(self.store.commitlog.max_offset, confirmed)

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
        if reply.truncate_to >= 0:
            if self.epochs is not None:
                self.epochs.truncating(reply.truncate_to)
            self.store.truncate_to(reply.truncate_to)
        mine = self.store.commitlog.max_offset
        if reply.start_offset != mine:
            if reply.start_offset < mine:
                raise ReplicationError(f"master would start at {reply.start_offset}, this log ends at {mine}")
            # the master no longer has what this log needs next (retention):
            # start again, empty, at the master's oldest offset
            self.store.reset_log(reply.start_offset)
            if self.epochs is not None:
                self.epochs.adopt([x for x in reply.history if x[1] <= reply.start_offset])
        self.confirmed = min(reply.confirmed, self.store.commitlog.max_offset)
        self.master_max = reply.master_max

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
        self.confirmed = max(self.confirmed, min(hb.confirmed, clog.max_offset))
        return Ack(clog.max_offset, clog.flushed)
