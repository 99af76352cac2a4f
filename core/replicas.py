"""The master's view of its slaves: each one's progress (`ReplicaSet`), which
are in sync, how far writes are confirmed, and how long appends wait for
their first ack (`AckLag`). Thread-safe; fed by the replication sessions
(core/replication.py)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.replication import Ack


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
