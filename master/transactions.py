"""Transactional messages on the master: half messages, EndTransaction and
orphan checks, around the plain table (core/transactions.py).

- **Halves.** A send whose messages carry `TRAN_MSG=true` is stored whole
  in the transaction queue (`%TRANS%` queue 0) instead of its topic, each
  message with its real topic and queue and a nonce (`park`, called by the
  leader's send inside its write gate, as the timer's, and like it taking
  no lock: the room check is approximate): acknowledged like any send (sync
  replication included), with one transaction id per message (`ids`).
- **EndTransaction** (`end`): COMMIT stores the half's message in its real
  topic, then a `commit` op; ROLLBACK a `rollback` op. The half is closed
  in memory before its op is appended, so a repeat (a client retrying, a
  check's answer after the client's) answers from the table and stores
  nothing twice within a mastership. A crash between the message and its
  op leaves the half open: its check later may commit it again (at least
  once, as in RocketMQ). The lock covers the decision and the appends
  only; the sync slaves are waited for after it (so ends do not queue
  behind each other's replication), by a repeat too: a repeat answers
  success only once what the first end appended is acknowledged.
- **Orphans**: a half open past `broker.transaction_check_after_ms` is
  due; its check is leased to a poller that can deliver it (`poll`: a
  proxy names its producers' topics) for LEASE_MS. The poller reports it
  delivered (the thread appends a `check` op, its count, durable; the next
  is an interval later) or returned (handed out again at once); only
  delivered checks count. Due for a whole interval with none delivered, a
  half records a miss (a `miss` op). After `transaction_max_checks`
  delivered checks, or as many misses, it is discarded (a `discard` op:
  rolled back, logged, counted): every half ends within check_after +
  2 x max_checks x interval.
- **Rebuild** (the first use in a mastership: a restart, a promoted
  slave): the queue from group `%TXN%`'s committed offset (`low`, at or
  below the oldest open half; committed every COMMIT_MS at most once it
  moved, and retention's floor) to its end. Halves end within the bound
  above, so the read is bounded in time; their number by
  `transaction_max_open`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.errors import (
    BrokerBusyError,
    CorruptRecordError,
    InvalidArgumentError,
    InvalidTransactionError,
    NotMasterError,
    RequestTimeoutError,
    TailraceError,
)
from core.record import Message, Record, iter_records
from core.roles import SendStatus
from core.transactions import (
    ANY,
    NONCE,
    TXN_GROUP,
    TXN_QUEUE,
    TXN_TOPIC,
    Ended,
    Half,
    Orphan,
    Outcome,
    TxnId,
    TxnTable,
    Verdict,
    Wanted,
    decode_id,
    encode_id,
    from_half,
    new_nonce,
    op_message,
    to_half,
    txn_key,
)

if TYPE_CHECKING:
    from master.leader import LeaderRole

log = logging.getLogger(__name__)
READ_COUNT = 4096
READ_BYTES = 8 << 20
CHECKS_PER_PASS = 256  # orphans missed or discarded per pass (one append, with the checks delivered)
LEASE_MS = 30_000  # a check handed out and not reported on: handed out again after this long
ANSWER_HEADROOM = 64 * 1024  # of server.max_message_bytes, for a poll answer's framing
COMMIT_MS = 5000  # `low` moved: committed at most this long after


def wall_ms() -> int:
    return int(time.time() * 1000)  # half deadlines outlive this process: wall clock


class Transactions:
    def __init__(self, leader: LeaderRole, tick_s: float = 0.2, clock: Callable[[], int] = wall_ms) -> None:
        self.leader = leader
        self.tick_s = tick_s
        self.clock = clock
        core = leader.core
        b = core.config.broker
        self.broker = core.broker_name
        self.key = txn_key(core.config.replication.resolved_secret(), self.broker)
        self.table = TxnTable(
            b.transaction_check_after_ms,
            b.transaction_check_interval_ms,
            b.transaction_max_checks,
            b.transaction_max_open,
        )
        self.rebuilt = False
        self.discarded = 0
        self._committed_low: int | None = None
        self._commit_due = 0
        self.missed = 0
        self._lock = threading.RLock()
        self._candidates: list[int] = []  # the checks ready at the last pass, oldest first
        self._delivered: list[int] = []  # reported delivered: counted (a `check` op) at the next pass
        self._arrived = threading.Condition()
        self._gen = 0  # passes that found checks ready (a poll waits for the next one)
        self._logged = -1e9
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transactions", daemon=True)

    # ---- the send path (the leader's, inside its write gate) ---------------------------

    def park(self, topic: str, queue_id: int, messages: Sequence[Message]) -> list[Message]:
        """The half records of a transactional send for (topic, queue_id)
        (BrokerBusyError past transaction_max_open)."""
        if any(m.deliver_at_ms for m in messages):
            raise InvalidArgumentError(
                "a transactional message cannot be delayed (deliver_at_ms); nothing stored"
            )
        if self.rebuilt:  # (before the first rebuild nothing is counted: nothing refused)
            # no lock (this runs inside the write gate, which must close in microseconds): the
            # records not loaded yet count as open halves, so the check errs on the safe side
            end = self.leader.core.store.queue_offsets(TXN_TOPIC, TXN_QUEUE)[1]
            self.table.room(len(messages) + max(0, end - self.table.loaded))
        return [to_half(m, topic, queue_id, new_nonce()) for m in messages]

    def ids(self, halves: Sequence[Message], stored: Sequence[tuple[int, int]]) -> list[str]:
        return [
            encode_id(self.key, TxnId(self.broker, q, (h.properties or {}).get(NONCE, "")))
            for h, (_, q) in zip(halves, stored, strict=True)
        ]

    # ---- EndTransaction --------------------------------------------------------------

    def end(self, topic: str, transaction_id: str, outcome: Outcome) -> Ended:
        """End the transaction `transaction_id` names (a half of `topic`:
        the caller's permission is to publish there). InvalidTransactionError
        when it names no transaction of this broker group's that is open or
        was ended the same way; nothing is done then."""
        if outcome is Outcome.DISCARD:
            raise InvalidArgumentError("a transaction ends with COMMIT or ROLLBACK")
        t = decode_id(self.key, transaction_id)
        if t.broker != self.broker:
            raise InvalidTransactionError("the transaction id names another broker group")
        acked = True
        with self._lock:  # decide and append; the slaves are waited for after it
            self._ready()
            verdict, before = self.table.verdict(t, outcome)
            if verdict is Verdict.UNKNOWN:
                raise InvalidTransactionError(
                    "the transaction id names no open transaction here (ended long ago, or never begun)"
                )
            if verdict is Verdict.CONFLICT:
                assert before is not None
                raise InvalidTransactionError(f"the transaction was ended already: {before.value}")
            if verdict is Verdict.STORE:
                half = self.table.open[t.offset]
                if half.topic != topic:
                    raise InvalidTransactionError(
                        f"the transaction is one of another topic than {topic[:100]!r}"
                    )
                if outcome is Outcome.COMMIT:
                    msg = from_half(self._half_record(half.offset))
                    acked = self._append(msg.topic, msg.queue_id, [msg], "committing a half message")
                self.table.close(half.offset, outcome)  # a repeat is answered from here on
                acked = self._append(TXN_TOPIC, TXN_QUEUE, [op_message(outcome.value, half.offset)], "its op")
                self.leader.core.metrics.transactions_ended.labels(outcome.value).inc()
        # a repeat too: what the first end appended may not be on the slaves yet (it timed out)
        if not self._acknowledged() or not acked:
            raise RequestTimeoutError(
                f"{outcome.value} recorded on the master, not acknowledged by enough slaves in time "
                "(ending it again answers once it is)"
            )
        return Ended(outcome, False) if before is None else Ended(before, True)

    def _append(self, topic: str, queue: int, messages: list[Message], what: str) -> bool:
        """Append through the leader's send, without waiting for slaves (the
        caller does, after releasing the lock: `_acknowledged`); False:
        stored, not acknowledged (its lease lapsed); raises when nothing was stored."""
        out = self.leader.send(topic, queue, messages, internal=True, wait_slaves=False)
        if not out.results:
            if out.status is SendStatus.NOT_MASTER:
                raise NotMasterError(f"{what}: {out.detail}", out.master_address)
            raise BrokerBusyError(f"{what}: {out.status.value} {out.detail}")
        return out.status is SendStatus.SEND_OK

    def _acknowledged(self) -> bool:
        """Everything appended so far (the caller's appends, or the earlier end
        a repeat answers for) is on enough slaves (sync mode), under a valid lease."""
        leader = self.leader
        if leader.core.config.replication.sync and not leader._wait_replicated():
            return False
        return not leader.fenced()

    # ---- orphans -----------------------------------------------------------------------

    def poll(
        self,
        max_count: int,
        wait_ms: int,
        alive: Callable[[], bool] = lambda: True,
        wanted: Wanted = ANY,
        delivered: Sequence[str] = (),
        returned: Sequence[str] = (),
    ) -> list[Orphan]:
        """Up to `max_count` orphan checks the caller can deliver (`wanted`:
        its producers' topics and groups, a byte bound), each leased to it
        for LEASE_MS, waiting up to `wait_ms` (capped by pull.max_wait_ms)
        for one. `delivered`, `returned`: its reports on checks of earlier
        answers (transaction ids): a delivered one is counted (its `check`
        op, by the thread), a returned one handed out again at once."""
        if not 1 <= max_count <= 1024 or wait_ms < 0 or max(len(delivered), len(returned)) > 4096:
            raise InvalidArgumentError("max_count must be in 1..1024, wait_ms >= 0, at most 4096 reports")
        self._report(delivered, returned)
        core = self.leader.core
        wait_s = min(wait_ms, core.config.pull.max_wait_ms) / 1000
        if wait_s > 0 and not core.try_hold():  # at the cap of held calls: answer at once
            wait_s = 0
        try:
            deadline = time.monotonic() + wait_s
            while True:
                gen = self._gen
                with self._lock:
                    taken = self._take(wanted, max_count)
                left = deadline - time.monotonic()
                if taken or left <= 0 or not alive() or self._stop.is_set():
                    break
                with self._arrived:
                    if gen == self._gen:
                        self._arrived.wait(min(left, 0.5))
        finally:
            if wait_s > 0:
                core.release_hold()
        return self._answer(taken, wanted)

    def _take(self, wanted: Wanted, max_count: int) -> list[Half]:
        """Lease up to `max_count` of the checks ready (the caller holds the lock)."""
        now, out = self.clock(), []
        for offset in self._candidates:
            h = self.table.open.get(offset)
            if h is None or h.next_check_ms > now or h.delivered or h.lease_until > now:
                continue
            if self.table.spent(h) or not wanted.takes(h):
                continue
            self.table.handed_out(h, now + LEASE_MS)
            out.append(h)
            if len(out) >= max_count:
                break
        return out

    def _answer(self, taken: list[Half], wanted: Wanted) -> list[Orphan]:
        """The leased halves read (outside the lock), within the byte bound
        (one at least); those left out are handed out again at once."""
        limit = self.leader.core.config.server.max_message_bytes - ANSWER_HEADROOM
        bound = min(wanted.max_bytes or limit, limit)
        out: list[Orphan] = []
        back: list[Half] = []
        size = 0
        for h in taken:
            try:
                o = self._orphan(h)
            except TailraceError as exc:
                log.warning("transactions: the half at %s/%d cannot be read: %s", TXN_TOPIC, h.offset, exc)
                back.append(h)
                continue
            if out and size + o.size() > bound:
                back.append(h)
                continue
            out.append(o)
            size += o.size()
        if back:
            with self._lock:
                for h in back:
                    self.table.reported(h, delivered=False)
        return out

    def _report(self, delivered: Sequence[str], returned: Sequence[str]) -> None:
        for ids, ok in ((delivered, True), (returned, False)):
            for text in ids:
                try:
                    t = decode_id(self.key, text)
                except InvalidTransactionError:
                    continue
                with self._lock:
                    h = self.table.open.get(t.offset)
                    if h is not None and h.nonce == t.nonce and self.table.reported(h, ok):
                        self._delivered.append(h.offset)

    def _orphan(self, half: Half) -> Orphan:
        rec = self._half_record(half.offset)
        tid = encode_id(self.key, TxnId(self.broker, half.offset, half.nonce))
        return Orphan(tid, from_half(rec), half.group, half.checks + 1, rec.physical_offset, rec.store_ms)

    def status(self) -> dict[str, int]:
        """For Status.details["transactions"] (read without the lock: a glance)."""
        return {
            "open": len(self.table.open),
            "ready": len(self._candidates),
            "missed": self.missed,
            "discarded": self.discarded,
            "rebuilt": int(self.rebuilt),
        }

    # ---- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._arrived:
            self._arrived.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self.leader.fenced() or self.leader.core.store.topics.queue_count(TXN_TOPIC) is None:
                continue
            try:
                self.run_once(self.clock())
            except Exception as exc:  # a pass that failed is tried again
                self._failed(exc)

    def run_once(self, now_ms: int) -> int:
        """One pass: load, act on the orphans due (one append of their ops),
        commit `low` when it moved. Returns how many were acted on."""
        if self.leader.core.store.topics.queue_count(TXN_TOPIC) is None:
            return 0
        with self._lock:  # (its appends wait for no slave: an op lost to a failover is made again)
            self._ready()
            t = self.table
            counted = [t.open[o] for o in dict.fromkeys(self._delivered) if o in t.open]
            self._delivered.clear()
            due = t.due(now_ms, CHECKS_PER_PASS)
            ops = [op_message("check", h.offset, h.checks + 1) for h in counted] + [
                op_message("discard", d.half.offset)
                if d.discard
                else op_message("miss", d.half.offset, misses=d.half.misses + 1)
                for d in due
            ]
            if ops:
                self._append(TXN_TOPIC, TXN_QUEUE, ops, "orphan checks")
            for h in counted:
                t.checked(h, now_ms)
            self.leader.core.metrics.transaction_checks.inc(len(counted))
            for d in due:
                h = d.half
                if d.discard:
                    t.close(h.offset, Outcome.DISCARD)
                    self.discarded += 1
                    self.leader.core.metrics.transactions_ended.labels(Outcome.DISCARD.value).inc()
                    log.warning(
                        "transactions: the half at %s/%d (topic %s, group %r) is rolled back: no answer "
                        "after %d checks delivered (%d intervals no producer took one)",
                        TXN_TOPIC, h.offset, h.topic, h.group, h.checks, h.misses,
                    )  # fmt: skip
                else:
                    t.missed(h, now_ms)
                    self.missed += 1
            self._candidates = [h.offset for h in t.ready(now_ms)]
            if self._candidates:
                with self._arrived:
                    self._gen += 1
                    self._arrived.notify_all()
            self.leader.core.metrics.transactions_open.set(len(t.open))
            low = t.low()
        self._commit_low(low, now_ms)  # (outside the lock: a sync commit waits for the slaves)
        return len(due)

    def _commit_low(self, low: int, now_ms: int) -> None:
        if self._committed_low is not None and low <= self._committed_low:
            return
        if self._committed_low is not None and now_ms < self._commit_due:
            return
        self.leader.commit_offset(TXN_GROUP, TXN_TOPIC, TXN_QUEUE, low, internal=True)
        self._committed_low, self._commit_due = low, now_ms + COMMIT_MS

    # ---- the queue -------------------------------------------------------------------

    def _ready(self) -> None:
        """Rebuilt (once per mastership) and loaded to the queue's end (the caller holds the lock)."""
        if not self.rebuilt:
            self._rebuild()
        self._load()

    def _rebuild(self) -> None:
        core = self.leader.core
        store = core.store
        if store.topics.queue_count(TXN_TOPIC) is None:
            self.rebuilt = True
            return
        lo, end = store.queue_offsets(TXN_TOPIC, TXN_QUEUE)
        committed = core.offsets.query(TXN_GROUP, TXN_TOPIC, TXN_QUEUE)
        start = committed if committed is not None else lo
        if start < lo:
            log.error("transactions: records %d..%d of %s deleted before they ended", start, lo, TXN_TOPIC)
            start = lo
        self.table.start_at(start)
        self._committed_low = committed
        self._load()
        self.rebuilt = True
        log.info(
            "transactions: %d open (records %d..%d of %s read)", len(self.table.open), start, end, TXN_TOPIC
        )

    def _load(self) -> None:
        store, t = self.leader.core.store, self.table
        if store.topics.queue_count(TXN_TOPIC) is None:
            return
        while True:
            read = store.read(TXN_TOPIC, TXN_QUEUE, t.loaded, READ_COUNT, READ_BYTES)
            if not read.count:
                return
            at = before = t.loaded
            records = iter_records(read.data, verify=False)
            while True:
                try:
                    rec = next(records, None)
                except CorruptRecordError as exc:  # past it: a half lost (never committed) or an op lost
                    log.error("transactions: record %d of %s does not decode: %s", at, TXN_TOPIC, exc)
                    t.start_at(at + 1)
                    break
                if rec is None:
                    break
                t.apply(rec.queue_offset, rec.properties, rec.store_ms)
                at = rec.queue_offset + 1
            if t.loaded == before:  # nothing applied: never spin
                t.start_at(before + 1)

    def _half_record(self, offset: int) -> Record:
        read = self.leader.core.store.read(TXN_TOPIC, TXN_QUEUE, offset, 1, READ_BYTES)
        rec = next(iter_records(read.data, verify=True), None) if read.count else None
        if rec is None or rec.queue_offset != offset:
            raise CorruptRecordError(f"the half message at {TXN_TOPIC}/{offset} is gone")
        return rec

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged < 10:
            return
        self._logged = now
        if isinstance(exc, TailraceError):
            log.warning("transactions: %s (retrying; logged every 10 s at most)", exc)
        else:
            log.error("transactions pass failed (retrying)", exc_info=exc)
