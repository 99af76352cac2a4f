"""The master's timer: stores delayed messages in their real topics once due.

The logic is `core/timer.TimerState` (a heap, time passed in); this is the
thin part that reads the store and writes through the leader role, on a
thread the role owns like the retry scheduler (master/scheduler.py): it runs
while the role leads with a valid lease and is stopped *before* the role's
writes are gated off, so a clean shutdown or demotion leaves every delivery
recorded in the progress queue (no redelivery after a clean restart).

Each pass (`run_once(now_ms)`):

1. the first pass of a mastership rebuilds: from the committed `low`, the
   progress records from the committed snapshot on, then the wait queue;
2. loads the wait queue's new records (up to the confirmed offset: a send
   not acknowledged yet is not delivered);
3. stores due messages in their real topics, one batch per destination, and
   marks them done; a batch refused for good is retried message by message,
   so one bad message is isolated: it is skipped (logged, counted) and the
   rest go on; a message failing otherwise is retried later with a pause,
   and skipped after `give_up_ms`; a retriable refusal of the store (no
   in-sync slave, fenced, disk full) ends the pass, everything kept;
4. rolls the oldest pending messages when the done ones pile up above `low`;
5. writes its progress as `TimerState.progress` decides: a delta, or a
   snapshot now and then, or a release; and commits `low` and where a
   rebuild starts reading as group `%TIMER%`'s offsets (retention's floor).

A crash between a delivery and its delta redelivers that message after the
restart or failover: at least once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.errors import BrokerBusyError, CorruptRecordError, TailraceError
from core.record import Message, Record, iter_records
from core.timer import (
    PROGRESS_QUEUE,
    TIMER_GROUP,
    TIMER_QUEUES,
    TIMER_TOPIC,
    WAIT_QUEUE,
    TimerState,
    check_room,
    decode_progress,
    delayed,
    due_of,
    encode_progress,
    from_timer,
    progress_chunk,
    to_timer,
)

if TYPE_CHECKING:
    from master.leader import LeaderRole

log = logging.getLogger(__name__)
BATCH = 256  # due messages stored per pass
LOAD_BATCH = 4096  # wait-queue records loaded per pass
ROLL_BATCH = 64  # pending messages rolled per pass at most (in one append)
READ_BYTES = 8 << 20
RETRY_MS = 1000  # a message that failed waits this long before it is tried again
GIVE_UP_MS = 30_000  # a message failing this long (unexpectedly, while others are stored) is skipped


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _mono_ms() -> int:
    return int(time.monotonic() * 1000)


class Timer:
    def __init__(self, leader: LeaderRole, tick_s: float = 0.05, give_up_ms: int = GIVE_UP_MS) -> None:
        self.leader = leader
        self.tick_s = tick_s
        self.give_up_ms = give_up_ms
        b = leader.core.config.broker
        self.max_delay_ms = b.max_delay_ms
        self.limits = (b.timer_max_pending, b.timer_max_pending_bytes)
        self.state = TimerState(chunk=progress_chunk(leader.core.store.config.max_message_bytes))
        self.rebuilt = False
        self.delivered = 0
        self.skipped = 0
        self.rolled = 0
        self._caught_up = False  # the last load reached the wait queue's (visible) end
        self._failing: dict[int, int] = {}  # offset -> first failure (monotonic ms)
        self._logged = -1e9
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timer", daemon=True)

    # ---- the send path (the leader's, any thread) ------------------------------------

    def delayed(self, messages: Sequence[Message]) -> bool:
        return delayed(messages, _wall_ms(), self.max_delay_ms)

    def park(self, topic: str, queue_id: int, messages: list[Message]) -> list[Message]:
        """The wait-queue records of a delayed send (BrokerBusyError past the cap)."""
        s = self.state
        unloaded = max(0, self.leader.core.store.queue_offsets(TIMER_TOPIC, WAIT_QUEUE)[1] - s.loaded)
        if self.rebuilt:  # (before its first pass the timer knows no count: nothing refused)
            check_room(len(s.pending) + unloaded, s.pending_bytes, messages, self.limits)
        now = _wall_ms()
        return [to_timer(m, topic, queue_id, now) for m in messages]

    # ---- the thread ------------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the pass under way (its progress written)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        m = self.leader.core.metrics
        m.timer_pending.set(0)
        m.timer_pending_bytes.set(0)
        m.timer_lag.set(0)

    def _run(self) -> None:
        more = False
        while not self._stop.wait(0 if more else self.tick_s):
            more = False
            if self.leader.fenced() or self.leader.core.store.topics.queue_count(TIMER_TOPIC) is None:
                continue
            try:
                now = _wall_ms()
                more = self.run_once(now, _mono_ms()) > 0 and self.state.due(now)
            except Exception as exc:  # a pass that failed is tried again
                self._failed(exc)

    def run_once(self, now_ms: int, mono_ms: int | None = None) -> int:
        """One pass; returns how many messages were stored in their topics.
        `now_ms` is the wall clock (due times), `mono_ms` a monotonic one (how
        long something has waited; tests drive one clock: `now_ms`)."""
        if self.leader.core.store.topics.queue_count(TIMER_TOPIC) is None:
            return 0
        mono = now_ms if mono_ms is None else mono_ms
        if not self.rebuilt:
            self._rebuild()
        self._load()
        try:
            delivered = self._deliver(now_ms, mono)
            self._roll()
        finally:  # what was done is recorded even when a pass stops half way
            self._write_progress(mono, self._stop.is_set())
            self._gauges(now_ms)
        return delivered

    # ---- rebuild and loading ---------------------------------------------------------

    def _rebuild(self) -> None:
        """The progress records from the last committed snapshot on (to the
        log's end: this master wrote or adopted all of them)."""
        store, offsets, s = self.leader.core.store, self.leader.core.offsets, self.state
        lo, end = store.queue_offsets(TIMER_TOPIC, PROGRESS_QUEUE)
        offset = max(lo, offsets.query(TIMER_GROUP, TIMER_TOPIC, PROGRESS_QUEUE) or 0)
        s.committed_low = offsets.query(TIMER_GROUP, TIMER_TOPIC, WAIT_QUEUE)
        if s.committed_low is not None:  # committed after the records that made it `low`
            s.apply({"kind": "delta", "low": s.committed_low, "done": []})
        s.pinned = offset < end
        applied = 0
        while offset < end:
            read = store.read(TIMER_TOPIC, PROGRESS_QUEUE, offset, 1024, READ_BYTES)
            if not read.count:
                break
            records, nxt = iter_records(read.data, verify=True), offset
            while True:
                try:
                    rec = next(records, None)
                except CorruptRecordError as exc:  # past it: its marks are lost (those come again)
                    log.error("timer: progress record %d does not decode: %s", nxt, exc)
                    nxt += 1
                    break
                if rec is None:
                    break
                nxt = rec.queue_offset + 1
                try:
                    s.apply(decode_progress(rec.body))
                    applied += 1
                except TailraceError as exc:
                    log.error("timer: progress record %d ignored: %s", rec.queue_offset, exc.message)
            offset = nxt
        wait_lo = store.queue_offsets(TIMER_TOPIC, WAIT_QUEUE)[0]
        if s.low < wait_lo:  # retention took what was pending (only if told to)
            log.error("timer: wait queue offsets %d..%d were deleted before delivery", s.low, wait_lo)
            s.apply({"kind": "delta", "low": wait_lo, "done": []})
        if s.committed_low is None:  # retention holds it from now on
            self.leader.commit_offset(TIMER_GROUP, TIMER_TOPIC, WAIT_QUEUE, s.low, internal=True)
            s.committed_low = s.low
        self.rebuilt = True
        log.info("timer: %d progress records applied; wait queue from %d", applied, s.low)

    def _load(self) -> None:
        leader, store, s = self.leader, self.leader.core.store, self.state
        left = LOAD_BATCH
        self._caught_up = False
        while left > 0:
            read = store.read(
                TIMER_TOPIC, WAIT_QUEUE, s.loaded, left, READ_BYTES, visible_end=leader.visible_end()
            )
            if not read.count:
                self._caught_up = True
                return
            records = iter_records(read.data, verify=False)
            while True:
                try:
                    rec = next(records, None)
                except CorruptRecordError as exc:
                    self._skip(s.loaded, f"its record does not decode ({exc})")
                    s.skip(s.loaded)
                    break
                if rec is None:
                    break
                left -= 1
                try:
                    due = due_of(rec)
                except TailraceError as exc:
                    self._skip(rec.queue_offset, exc.message)
                    s.skip(rec.queue_offset)
                    continue
                s.load(rec.queue_offset, due, len(rec.body))

    def _record(self, offset: int) -> Record | None:
        read = self.leader.core.store.read(TIMER_TOPIC, WAIT_QUEUE, offset, 1, READ_BYTES)
        return next(iter_records(read.data, verify=True), None) if read.count else None

    # ---- delivery -------------------------------------------------------------------

    def _deliver(self, now_ms: int, mono_ms: int) -> int:
        s = self.state
        due = s.pop_due(now_ms, BATCH)
        delivered = 0
        suspects: list[int] = []  # failed in this pass, not for good
        try:
            groups: dict[tuple[str, int], list[tuple[int, Message]]] = defaultdict(list)
            for offset, _at in due:
                try:
                    rec = self._record(offset)
                    if rec is None:
                        raise CorruptRecordError("its record is gone")
                    topic, queue, msg = from_timer(rec)
                except TailraceError as exc:  # for good: it names nowhere valid, or does not decode
                    if exc.retriable:  # (the store closing): it waits
                        raise
                    self._skip(offset, exc.message)
                    s.mark_done(offset)
                    continue
                groups[(topic, queue)].append((offset, msg))
            for (topic, queue), batch in groups.items():
                if self._stop.is_set():  # stopping: the rest waits, the progress is written
                    break
                delivered += self._store_batch(topic, queue, batch, suspects)
            if delivered:  # others were stored: the fault is the suspects' own
                self._give_up(suspects, mono_ms)
        finally:
            for offset in suspects:  # its first failure, for the give-up
                self._failing.setdefault(offset, mono_ms)
            for offset, _at in due:  # what was neither stored nor skipped waits for the next pass
                s.retry_at(offset, now_ms + RETRY_MS if offset in self._failing else now_ms)
            self.delivered += delivered
        return delivered

    def _store_batch(
        self, topic: str, queue: int, batch: list[tuple[int, Message]], suspects: list[int]
    ) -> int:
        """Store one destination's batch; a batch refused for good is split
        to find the message at fault. What is not the message's fault ends
        the pass, everything kept: a retriable refusal (no in-sync slave,
        fenced, disk full) and a raw storage error (EIO: the disk's, not the
        message's; it must never count against a message)."""
        try:
            self._send(topic, queue, [m for _, m in batch])
        except TailraceError as exc:
            if exc.retriable:
                raise  # nothing can be stored now: the pass ends, everything kept
            if len(batch) > 1:
                return sum(self._store_batch(topic, queue, [one], suspects) for one in batch)
            self._skip(batch[0][0], f"it cannot be stored in its topic ({exc})")  # for good
            self._failing.pop(batch[0][0], None)
            self.state.mark_done(batch[0][0])
            return 0
        except OSError:
            raise  # the storage's: the pass ends, everything kept (counted and logged by the pass)
        except Exception as exc:  # unexpected: isolate it, one message at a time
            if len(batch) > 1:
                return sum(self._store_batch(topic, queue, [one], suspects) for one in batch)
            suspects.append(batch[0][0])
            self._failed(exc)
            return 0
        lag, now = self.leader.core.metrics.timer_delivery_lag, _wall_ms()
        for offset, _ in batch:
            due = self.state.pending.get(offset, (now, 0))[0]
            lag.observe(max(0, now - due) / 1000)
            self.state.mark_done(offset)
            self._failing.pop(offset, None)
        return len(batch)

    def _give_up(self, suspects: list[int], mono_ms: int) -> None:
        """Skip the messages failing (unexpectedly) for `give_up_ms`, on the
        monotonic clock, and only in a pass that stored others: a fault
        every store hits (a bug, the process) is no message's own."""
        for offset in suspects:
            if mono_ms - self._failing.get(offset, mono_ms) >= self.give_up_ms:
                self._failing.pop(offset, None)
                self._skip(offset, f"it could not be stored in its topic for {self.give_up_ms} ms")
                self.state.mark_done(offset)

    def _send(self, topic: str, queue: int, messages: list[Message]) -> list[tuple[int, int]]:
        out = self.leader.send(topic, queue, messages, internal=True)
        if not out.results:  # not stored (no in-sync slave, fenced): retriable
            raise BrokerBusyError(f"storing in {topic}: {out.status} {out.detail}")
        return out.results

    # ---- bounds and progress --------------------------------------------------------

    def _roll(self) -> None:
        """Roll what `TimerState.to_roll` says, once the wait queue is
        loaded (right after a rebuild, the done offsets of the snapshot
        would outnumber the pending ones still loading): the copies in one
        append, so one wait for the slaves, and none when stopping."""
        s, store = self.state, self.leader.core.store
        if not self._caught_up or self._stop.is_set():
            return
        offsets = s.to_roll(ROLL_BATCH, store.config.max_batch_bytes // 2)
        copies: list[Message] = []
        rolled: list[int] = []
        for offset in offsets:
            rec = self._record(offset)
            if rec is None:
                s.mark_done(offset)
                continue
            copies.append(
                Message(
                    TIMER_TOPIC,
                    WAIT_QUEUE,
                    rec.body,
                    rec.tags,
                    rec.keys,
                    rec.properties,
                    rec.flags,
                    rec.born_ms,
                )
            )
            rolled.append(offset)
        if not copies or self._stop.is_set():
            return
        self._send(TIMER_TOPIC, WAIT_QUEUE, copies)
        metrics = self.leader.core.metrics
        for offset, copy in zip(rolled, copies, strict=True):
            self._failing.pop(offset, None)  # (the copy starts afresh)
            s.mark_done(offset, rolled=True)
            metrics.timer_rolled_bytes.inc(len(copy.body))
        self.rolled += len(rolled)
        metrics.timer_rolled.inc(len(rolled))

    def _write_progress(self, mono_ms: int, final: bool) -> None:
        """What `TimerState.progress` decides: records first, then the
        commits (group `%TIMER%`'s offsets: retention's floor), in log order."""
        s, leader = self.state, self.leader
        plan = s.progress(mono_ms, final)
        if plan is None:
            return
        first = None
        if plan.records:
            msgs = [Message(TIMER_TOPIC, PROGRESS_QUEUE, encode_progress(r)) for r in plan.records]
            (_, first), *_ = self._send(TIMER_TOPIC, PROGRESS_QUEUE, msgs)
        s.written(plan, mono_ms)
        if plan.commit_low is not None:
            leader.commit_offset(TIMER_GROUP, TIMER_TOPIC, WAIT_QUEUE, plan.commit_low, internal=True)
        if plan.release:
            first = leader.core.store.queue_offsets(TIMER_TOPIC, PROGRESS_QUEUE)[1]
        if first is not None and (plan.snapshot or plan.release):
            leader.commit_offset(TIMER_GROUP, TIMER_TOPIC, PROGRESS_QUEUE, first, internal=True)
        s.committed(plan, mono_ms)

    def _gauges(self, now_ms: int) -> None:
        m, s = self.leader.core.metrics, self.state
        m.timer_pending.set(len(s.pending))
        m.timer_pending_bytes.set(s.pending_bytes)
        nxt = s.next_due()
        m.timer_lag.set(max(0, now_ms - nxt) if nxt is not None else 0)

    # ---- failures ---------------------------------------------------------------------

    def _skip(self, offset: int, why: str) -> None:
        log.error("timer: the message at %s/%d is skipped: %s", TIMER_TOPIC, offset, why)
        self.skipped += 1
        self.leader.core.metrics.timer_skipped.inc()

    def _failed(self, exc: Exception) -> None:
        """Logged at most every 10 s (a broker that cannot write would flood the log)."""
        self.leader.core.metrics.timer_failures.inc()
        now = time.monotonic()
        if now - self._logged < 10:
            return
        self._logged = now
        if isinstance(exc, TailraceError):
            log.warning("timer: %s (retrying; logged every 10 s at most)", exc)
        else:
            log.error("timer pass failed (retrying)", exc_info=exc)


__all__ = ["TIMER_QUEUES", "Timer"]
