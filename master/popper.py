"""Pop consumption on the master (issue 18): Pop, AckPop, ChangeInvisible,
PopDeadLetter (master/pop_dead_letters.py) and the revive pass, around the
plain state machine (core/pop/state.py).

Every change is planned from the table, appended as a `pop` system record
(applied as it is appended, as on every slave and in recovery) and only then
answered, so what a client was told survives a restart and a failover. One
lock serializes plan and append, so a plan is never made from a state that
an earlier plan has not reached yet.

The revive pass (the role's thread, every `tick_s`): an expired entry is
poppable again by itself (its deadline passed: the next pop hands it out
with attempt + 1); one delivered `pop_max_attempts` times goes to
`%DLQ%<group>` (the push consumers' dead-letter topic) and is acked. It also
moves the group's committed offset up to each queue's commit point, through
the log like any commit, so a group's progress shows where pulls and
QueryOffset look, and a pop state lost to retention restarts there. Each
commit rewrites offsets.json under the store's write lock, so a queue's is
written at most every `broker.pop_commit_interval_ms` (the first one that
long after the pass first sees the point ahead), and only when it moves
(master/pop_commits.py). Each pop notes its (group, topic) in `recent`: an
offset reset refuses a group that popped lately (core/pop/recent.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.errors import (
    BrokerBusyError,
    InvalidArgumentError,
    InvalidQueueError,
    InvalidReceiptError,
    QuotaExceededError,
    RequestTimeoutError,
    TailraceError,
    UnknownTopicError,
)
from core.pop.handles import Receipt, decode_handle, encode_handle, handle_key
from core.pop.ops import PoppedElsewhere, PoppedMessage, PopResult
from core.pop.recent import RecentPops
from core.pop.state import MAX_POP_BATCH, Key, PopTable
from core.pull import PullArgs
from core.record import Record, validate_topic
from core.redirect import NO_ADVICE, Advice
from core.retry import check_client_group
from core.subscription import Subscription
from master import pop_commits, pop_dead_letters
from master.pop_reads import Got, cold_slave, offset_of, pop_cursor, read_one, read_queue

if TYPE_CHECKING:
    from master.leader import LeaderRole

log = logging.getLogger(__name__)
MAX_INVISIBLE_MS = 12 * 3600 * 1000  # RocketMQ's limit too
LOG_EVERY_S = 10
SLICE_S = 0.1  # a held pop re-checks at least this often (expiries, other queues)


def wall_ms() -> int:
    return int(time.time() * 1000)  # deadlines outlive this process: wall clock, as `store_ms`


class Popper:
    def __init__(self, leader: LeaderRole, tick_s: float = 0.2, clock: Callable[[], int] = wall_ms) -> None:
        self.leader = leader
        self.clock = clock
        self.tick_s = tick_s
        core = leader.core
        self.max_attempts = core.config.broker.pop_max_attempts
        self.commit_interval_ms = core.config.broker.pop_commit_interval_ms
        self._commit_due: dict[Key, int] = {}  # per queue: the clock's ms from which it may commit again
        self.recent = RecentPops(core.config.broker.pop_live_ms)  # who pops what lately (resets ask)
        self.key = handle_key(core.config.replication.resolved_secret(), core.broker_name)
        self.dead_lettered = 0
        self.popped: Counter[str] = Counter()  # messages handed out, by where their bytes are read
        self._count_lock = threading.Lock()  # (pops count after the pop lock: concurrently)
        self._lock = threading.Lock()
        self._rr = 0
        self.failures = 0  # revive steps that failed (retried next tick)
        self._warned = -1e9
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pop-revive", daemon=True)

    @property
    def table(self) -> PopTable:
        return self.leader.core.pops

    # ---- Pop ----------------------------------------------------------------------------

    def pop(
        self,
        group: str,
        topic: str,
        queue_id: int,
        max_messages: int,
        invisible_ms: int,
        wait_ms: int = 0,
        alive: Callable[[], bool] = lambda: True,
        tag_expression: str = "",
        bodies_elsewhere: bool = False,
    ) -> PopResult:
        """Hand out up to `max_messages` of `topic` (queue `queue_id`, or -1:
        any) to `group`, invisible to other pops for `invisible_ms`; with
        nothing to hand out, wait up to `wait_ms` (capped by pull.max_wait_ms).
        `tag_expression` ("" or "*": every message; else "TagA || TagB"):
        the messages it does not match are not handed out and count as
        consumed for the group (as in RocketMQ's pop). `bodies_elsewhere`:
        the caller reads record bytes from a slave, so a queue the redirect
        advice sends to one is popped from its ConsumeQueue alone
        (`PopResult.elsewhere`; master/pop_reads.py)."""
        check_client_group(group)
        validate_topic(topic)
        sub = Subscription.parse(tag_expression)
        count = self.leader.core.store.topics.queue_count(topic)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        self.recent.note(group, topic, self.clock())
        if not -1 <= queue_id < count:
            raise InvalidQueueError(f"queue id {queue_id} out of range for {topic!r} (0..{count - 1}, or -1)")
        max_messages = max_messages or 32
        if not 1 <= max_messages <= MAX_POP_BATCH:
            raise InvalidArgumentError(f"max_messages must be in 1..{MAX_POP_BATCH}")
        if not 1 <= invisible_ms <= MAX_INVISIBLE_MS:
            raise InvalidArgumentError(f"invisible_ms must be in 1..{MAX_INVISIBLE_MS}")
        if wait_ms < 0:
            raise InvalidArgumentError("wait_ms must be >= 0")
        queues = [queue_id] if queue_id >= 0 else self._rotation(count)
        core = self.leader.core
        if wait_ms > 0 and not core.try_hold():  # at the cap of held pulls and pops: answer at once
            core.pulls_not_held += 1
            wait_ms = 0
        try:
            return self._pop_waiting(
                group, topic, queues, max_messages, invisible_ms, wait_ms, alive, sub, bodies_elsewhere
            )
        finally:
            if wait_ms > 0:
                core.release_hold()

    def _pop_waiting(
        self,
        group: str,
        topic: str,
        queues: list[int],
        max_messages: int,
        invisible_ms: int,
        wait_ms: int,
        alive: Callable[[], bool],
        sub: Subscription,
        elsewhere: bool,
    ) -> PopResult:
        deadline = time.monotonic() + min(wait_ms, self.leader.core.config.pull.max_wait_ms) / 1000
        held = False
        advices: dict[int, Advice] = {}  # per queue, asked once per call (bodies_elsewhere)
        while True:
            got, cold = self._pop_once(
                group, topic, queues, max_messages, invisible_ms, sub, advices if elsewhere else None
            )
            left = deadline - time.monotonic()
            if got or cold or left <= 0 or not alive():
                if len(queues) != 1:
                    advice = NO_ADVICE
                elif queues[0] in advices:
                    advice = advices[queues[0]]  # (asked once: advice is counted)
                else:
                    advice = self._advice(group, topic, queues[0])
                return PopResult(got, advice, held, cold)
            held = True
            if len(queues) == 1:
                self._hold(group, topic, queues[0], min(left, SLICE_S * 5), alive)
            else:
                self._stop.wait(min(left, SLICE_S))
            if not alive():  # the caller left during the hold: nothing more is handed out to it
                return PopResult([], NO_ADVICE, held)

    def _hold(self, group: str, topic: str, queue_id: int, wait_s: float, alive: Callable[[], bool]) -> None:
        """Wait for a record past the queue's pop cursor (or `wait_s`: an
        entry may expire meanwhile)."""
        store = self.leader.core.store
        st = self.table.get((group, topic, queue_id))
        cursor = st.cursor if st is not None else 0

        def ready() -> bool:
            return store.next_queue_offset(topic, queue_id) > cursor or not alive()

        if ready():  # records the pop could not take yet (not confirmed in sync mode): no busy loop
            self._stop.wait(min(wait_s, SLICE_S))
        else:
            self.leader.core.notifier.wait((topic, queue_id), ready, wait_s)

    def _rotation(self, count: int) -> list[int]:
        self._rr = (self._rr + 1) % count
        return [(self._rr + i) % count for i in range(count)]

    def _pop_once(
        self,
        group: str,
        topic: str,
        queues: list[int],
        max_messages: int,
        invisible_ms: int,
        sub: Subscription,
        advices: dict[int, Advice] | None,
    ) -> tuple[list[PoppedMessage], list[PoppedElsewhere]]:
        """One pass over `queues`. `advices` (bodies_elsewhere): each queue's
        redirect advice at its cursor goes there, and a queue it sends to a
        slave is popped from its ConsumeQueue alone."""
        leader = self.leader
        core = leader.core
        store = core.store
        out: list[PoppedMessage] = []
        cold_out: list[PoppedElsewhere] = []
        wrote = False
        full: QuotaExceededError | None = None  # a queue with no room (others may have some)
        budget = core.config.pull.max_bytes  # one for the whole answer, spent before planning
        rep = core.config.replication
        if rep.sync and not leader._sync_ready():  # as a send: refused before anything is stored
            raise BrokerBusyError(f"{rep.min_insync_replicas} in-sync slave(s) needed; nothing popped")
        now = self.clock()
        for q in queues:
            want = max_messages - len(out) - len(cold_out)
            if want <= 0 or budget <= 0:
                break
            key = (group, topic, q)
            if advices is not None and q not in advices:  # once per call, outside the lock (its
                at = pop_cursor(self.table.get(key), store, core.offsets.query(*key), topic, q)
                advices[q] = leader._advise(PullArgs(group, topic, q, at))  # CQ reads)
            with leader._writing(), self._lock:  # a queue's read, plan and append: one step
                lo, _ = store.queue_offsets(topic, q)
                st = self.table.get(key)
                start = st.cursor if st is not None else (core.offsets.query(group, topic, q) or lo)
                cursor = max(start, lo)
                visible, slave = leader.visible_end(), -1
                if advices is not None:
                    connected = [(r.broker_id, r.acked) for r in leader.replicas.snapshot() if r.connected]
                    slave, visible = cold_slave(advices[q], connected, visible)
                # read first, then plan only what fits: a pop record must never hand
                # out what the answer cannot carry (its attempts would burn unseen)
                again = self.table.again(key, now, self.max_attempts)
                first = not out and not cold_out  # the answer's first message goes whatever its size
                read = read_queue(
                    store, topic, q, again, cursor, want, budget, first, sub, visible, slave >= 0
                )
                if read.passed:  # expired tag hash collisions (master/pop_reads.py): consumed
                    store.append_system("pop", {"op": "ack", "group": group, "topic": topic, "queue": q,
                                                "o": read.passed})  # fmt: skip
                    wrote = True
                try:
                    plan = self.table.plan_pop(
                        key, start, read.end, max(1, len(read.again) + len(read.fresh)), invisible_ms, now,
                        gen_floor=leader.epoch << 32, max_attempts=self.max_attempts, low=lo,
                        again=list(read.again), take=[offset_of(g) for g in read.fresh],
                    )  # fmt: skip
                except QuotaExceededError as exc:
                    full = exc
                    continue
                if plan is None:
                    continue
                budget = read.budget
                store.append_system("pop", plan)
                wrote = True
                st = self.table.get(key)
                assert st is not None
                by_offset: dict[int, Got | None] = dict(read.again)
                by_offset.update((offset_of(g), g) for g in read.fresh)
                base, span = int(plan["from"]), int(plan["n"])
                for o in [*plan["re"], *(base + i for i in plan.get("t", range(span)))]:
                    got = by_offset[o]
                    entry = st.inflight[o]
                    if got is None:  # removed by retention: nothing to deliver; the revive pass acks it
                        continue
                    handle = encode_handle(self.key, Receipt(core.broker_name, group, topic, q, o, entry.gen))
                    if isinstance(got, tuple):
                        out.append(PoppedMessage(got[0], got[1], entry.attempt, handle, entry.deadline_ms))
                    else:
                        cold_out.append(
                            PoppedElsewhere(
                                q, o, got.size, slave, entry.attempt, handle, entry.deadline_ms,
                                got.physical_offset,
                            )
                        )  # fmt: skip
        if wrote:
            self._count(len(out), len(cold_out))
            self._confirm("popped")
        elif full is not None:  # nothing handed out, and only for want of room
            raise full
        return out, cold_out

    def counts(self) -> dict[str, int]:
        """A copy of `popped`, taken under its lock."""
        with self._count_lock:
            return dict(self.popped)

    def _count(self, here: int, elsewhere: int) -> None:
        with self._count_lock:
            self.popped["here"] += here
            self.popped["elsewhere"] += elsewhere
        m = self.leader.core.metrics.popped
        if here:
            m.labels("here").inc(here)
        if elsewhere:
            m.labels("elsewhere").inc(elsewhere)

    def _read_one(self, topic: str, queue_id: int, offset: int) -> tuple[Record, bytes] | None:
        return read_one(self.leader.core.store, topic, queue_id, offset)

    def _advice(self, group: str, topic: str, queue_id: int) -> Advice:
        st = self.table.get((group, topic, queue_id))
        if st is None:
            return NO_ADVICE
        return self.leader._advise(PullArgs(group, topic, queue_id, st.cursor))

    # ---- AckPop, ChangeInvisible, PopDeadLetter ------------------------------------------

    def receipt(self, group: str, topic: str, handle: str) -> Receipt:
        """The receipt a handle names, for this broker group, group and topic."""
        r = decode_handle(self.key, handle)
        if (r.broker, r.group, r.topic) != (self.leader.core.broker_name, group, topic):
            raise InvalidReceiptError(
                f"the receipt handle is for group {r.group!r}, topic {r.topic!r} on {r.broker!r}"
            )
        return r

    def ack(self, group: str, topic: str, handle: str) -> None:
        (error,) = self.ack_all(group, topic, [handle])
        if error is not None:
            raise error

    def ack_all(self, group: str, topic: str, handles: Sequence[str]) -> list[TailraceError | None]:
        """Ack every handle that names a live hand-out: one `ack` record per
        queue, one wait for the slaves. Per handle, in order: None (acked) or
        why not (INVALID_RECEIPT_HANDLE: acked already, handed out again since,
        not this broker group's; INVALID_ARGUMENT: the group). A failed write
        fails the call (an earlier queue's acks may be stored: their retries
        then answer INVALID_RECEIPT_HANDLE, acked already)."""
        try:
            check_client_group(group)
        except InvalidArgumentError as exc:
            return [exc] * len(handles)
        results: list[TailraceError | None] = [None] * len(handles)
        by_queue: dict[Key, list[tuple[int, Receipt]]] = {}
        for i, handle in enumerate(handles):
            try:
                r = self.receipt(group, topic, handle)
            except InvalidReceiptError as exc:
                results[i] = exc
                continue
            by_queue.setdefault((r.group, r.topic, r.queue), []).append((i, r))
        wrote = False
        with self.leader._writing(), self._lock:
            for key, items in by_queue.items():
                plan, errors = self.table.plan_acks(key, [(r.offset, r.gen) for _, r in items])
                for (i, _), error in zip(items, errors, strict=True):
                    results[i] = error
                if plan is not None:
                    self.leader.core.store.append_system("pop", plan)
                    wrote = True
        if wrote:
            self._confirm("acked")
        return results

    def change_invisible(
        self, group: str, topic: str, handle: str, invisible_ms: int, keep_handle: bool = False
    ) -> tuple[str, int]:
        """Move a popped message's deadline to now + `invisible_ms`; returns its
        new receipt handle (the old one is stale from now on) and deadline.
        `keep_handle` (a renewal): the same handle stays good, and the
        deadline only moves later (`invisible_ms` > 0)."""
        check_client_group(group)
        if not (1 if keep_handle else 0) <= invisible_ms <= MAX_INVISIBLE_MS:
            raise InvalidArgumentError(
                f"invisible_ms must be in {1 if keep_handle else 0}..{MAX_INVISIBLE_MS}"
            )
        r = self.receipt(group, topic, handle)
        key = (r.group, r.topic, r.queue)
        with self.leader._writing(), self._lock:
            if keep_handle:
                plan = self.table.plan_renew(key, r.offset, r.gen, invisible_ms, self.clock())
            else:
                plan = self.table.plan_change(
                    key, r.offset, r.gen, invisible_ms, self.clock(), gen_floor=self.leader.epoch << 32
                )
            self.leader.core.store.append_system("pop", plan)
            st = self.table.get(key)
            deadline = (
                st.inflight[r.offset].deadline_ms if st and r.offset in st.inflight else int(plan["dl"])
            )
        self._confirm("renewed" if keep_handle else "changed")
        if keep_handle:
            return handle, deadline
        new = Receipt(r.broker, r.group, r.topic, r.queue, r.offset, int(plan["gen"]))
        return encode_handle(self.key, new), deadline

    def dead_letter(self, group: str, topic: str, handle: str) -> None:
        """PopDeadLetter: the handed-out message into `%DLQ%<group>`, settled."""
        pop_dead_letters.by_client(self, group, topic, handle)

    def _confirm(self, what: str) -> None:
        """As for a commit: in sync mode answered once replicated; a master
        fenced meanwhile does not acknowledge."""
        leader = self.leader
        if leader.core.config.replication.sync and not leader._wait_replicated():
            raise RequestTimeoutError(f"{what} on the master, not on enough slaves in time")
        if leader.fenced():
            raise RequestTimeoutError(f"{what}, but this master was fenced before it was acknowledged")

    # ---- revive ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self.leader.fenced():
                continue
            try:
                self.revive_once()
            except Exception:  # revive_once contains each entry's failures; this is a last resort
                log.exception("pop revive failed")

    def revive_once(self) -> int:
        """Dead-letter the expired entries past their attempts, and move
        committed offsets up to the commit points; returns how many were
        dead-lettered."""
        done = 0
        now = self.clock()
        for key, offset, entry in self.table.expired(now):
            if entry.attempt < self.max_attempts:
                continue
            try:
                done += pop_dead_letters.expired(self, key, offset, entry.gen, entry.attempt)
            except TailraceError as exc:
                self._warn("pop: %s/%s queue %d offset %d not dead-lettered yet: %s", *key, offset, exc)
        topics = self.leader.core.store.topics
        keys = [k for k in self.table.queues() if topics.queue_count(k[1]) is not None]  # (deleted: reset)
        for key in keys:
            try:
                self._drop_removed(key)
            except TailraceError as exc:
                self._warn("pop: %s/%s queue %d: %s", *key, exc)
            pop_commits.commit(self, key, now)  # (master/pop_commits.py)
        for key in self._commit_due.keys() - set(keys):  # queues the table forgot (a cut tail)
            del self._commit_due[key]
        self.dead_lettered += done
        return done

    def _warn(self, fmt: str, *args: object) -> None:
        """A revive failure (retried every tick): logged every LOG_EVERY_S at most."""
        self.failures += 1
        now = time.monotonic()
        if now - self._warned >= LOG_EVERY_S:
            self._warned = now
            log.warning(fmt + " (%d revive failures so far; logged every %d s at most)",
                        *args, self.failures, LOG_EVERY_S)  # fmt: skip

    def _drop_removed(self, key: Key) -> None:
        """Ack the in-flight entries retention removed from under them (there
        is nothing left to deliver)."""
        lo = self.leader.core.store.queue_offsets(key[1], key[2])[0]
        point = self.table.commit_point(key)
        if point is None or point >= lo:
            return
        with self.leader._writing(), self._lock:
            st = self.table.get(key)
            gone = [] if st is None else sorted(o for o in st.inflight if o < lo)
            if gone:
                payload = {"op": "ack", "group": key[0], "topic": key[1], "queue": key[2], "o": gone}
                self.leader.core.store.append_system("pop", payload)
                log.warning(
                    "pop: %s/%s queue %d: %d in-flight message(s) removed by retention", *key, len(gone)
                )
