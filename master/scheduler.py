"""The delay-level schedule: moves due messages to their retry topics.

`SendBack` parks a failed message in the schedule topic, queue = its delay
level. Every message of one level waits the same delay, so each level's
queue is in due order: the scheduler only looks at each queue's head. A
message is due at its store time plus its level's delay (`level_delay_ms`):
the level decides, never a property of the message, so no message can hold
a level up for longer than the level's delay. Due messages are stored in
their `REAL_TOPIC` (the group's retry topic) and the level's progress is
committed as a consumer offset of `%SCHEDULER%`, through the log like every
commit: a new master after a failover carries on where the old one stopped
(a message moved just before a crash may be moved twice: at least once).
The leader role owns it: it runs while that role leads and holds a valid
lease, and stops when the role is retired.

Nothing one message or one level does can stop the schedule (issue 16):

- each level is handled on its own; an exception in one is logged (at most
  every `LOG_EVERY_MS` per level), counted, and the other levels go on;
- a head that cannot go to its retry topic for good (an invalid name: an
  InvalidArgumentError) goes to its group's dead-letter topic at once; one
  that keeps failing otherwise goes there once it has failed for
  `give_up_ms`; if the dead-letter topic cannot take it either for good, it
  is skipped with an error in the log and a metric. A retriable failure of
  the dead-letter write (the broker cannot write now: no in-sync slave,
  fenced, disk full) keeps the head, since nothing could be stored anyway;
- a committed progress past the level's end (left by a broker that took
  such a commit) reads on from the end, as a pull past the end does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from core.errors import BrokerBusyError, CorruptRecordError, InvalidArgumentError, TailraceError
from core.record import Message, Record, iter_records, validate_topic
from core.retry import (
    DELIVER_AT,
    REAL_TOPIC,
    RETRY_PREFIX,
    SCHEDULE_TOPIC,
    SCHEDULER_GROUP,
    dlq_topic,
    level_delay_ms,
)

if TYPE_CHECKING:
    from master.leader import LeaderRole

log = logging.getLogger(__name__)
BATCH = 64
GIVE_UP_MS = 30_000  # a head failing this long (not for want of a writable store) is dead-lettered
LOG_EVERY_MS = 10_000  # a failing level is logged at most this often


def _wall_ms() -> int:
    return int(time.time() * 1000)  # the store's clock: records carry it as `store_ms`


class Scheduler:
    def __init__(self, leader: LeaderRole, tick_s: float = 0.05, give_up_ms: int = GIVE_UP_MS) -> None:
        self.leader = leader
        self.tick_s = tick_s
        self.give_up_ms = give_up_ms
        self.moved = 0
        self.dead_lettered = 0
        self.skipped = 0
        self._failing: dict[int, tuple[int, int]] = {}  # level -> (head queue offset, first failure ms)
        self._logged: dict[int, float] = {}  # level -> monotonic time of its last failure logged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self.leader.fenced():
                continue
            if self.leader.core.store.topics.queue_count(SCHEDULE_TOPIC) is None:
                continue
            try:
                self.run_once(_wall_ms())
            except Exception:  # run_once contains each level's failures; this is a last resort
                log.exception("schedule failed")

    def run_once(self, now_ms: int) -> int:
        """Move every due message of every level; returns how many moved.
        A level that fails is logged and counted, and waits for the next pass."""
        levels = self.leader.core.store.topics.queue_count(SCHEDULE_TOPIC) or 0
        moved = 0
        for level in range(levels):
            try:
                moved += self._run_level(level, now_ms)
            except Exception as exc:
                self._level_failed(level, exc)
        self.moved += moved
        return moved

    def _run_level(self, level: int, now_ms: int) -> int:
        leader, store = self.leader, self.leader.core.store
        lo, end = store.queue_offsets(SCHEDULE_TOPIC, level)
        committed = leader.core.offsets.query(SCHEDULER_GROUP, SCHEDULE_TOPIC, level) or 0
        offset = min(max(lo, committed), end)
        progress = [offset]
        try:
            return self._move_due(level, progress, now_ms)
        finally:  # progress so far is kept even when a move failed half way
            if progress[0] != offset or committed > end:
                leader.commit_offset(SCHEDULER_GROUP, SCHEDULE_TOPIC, level, progress[0], internal=True)

    def _move_due(self, level: int, progress: list[int], now_ms: int) -> int:
        """Move the level's due head messages, keeping `progress[0]` at the
        offset after the last one handled; returns how many moved. A message
        counts as moved once it is stored (also SLAVE_TIMEOUT: stored, not
        confirmed), so it is never moved twice."""
        leader, store = self.leader, self.leader.core.store
        delay_ms = level_delay_ms(leader.retry_delays, level)
        moved = 0
        while True:
            vis = leader.visible_end()
            read = store.read(SCHEDULE_TOPIC, level, progress[0], BATCH, 4 << 20, visible_end=vis)
            if not read.count:
                return moved
            records = iter_records(read.data, verify=True)  # few records: their CRCs are checked
            while True:
                try:
                    rec = next(records, None)
                except CorruptRecordError as exc:  # damaged bytes never decode: past it, and read again
                    self._skip(level, progress[0], f"its record does not decode ({exc})")
                    progress[0] += 1
                    break
                if rec is None:
                    break
                if rec.store_ms <= now_ms < rec.store_ms + delay_ms:
                    return moved  # (stored "in the future": the clock was set back; due now)
                moved += self._move(level, rec, now_ms)
                progress[0] = rec.queue_offset + 1

    def _move(self, level: int, rec: Record, now_ms: int) -> int:
        """Move one due head to its retry topic (1), or else to the dead
        letters or past it (0); raises to keep it at the head for now."""
        target = rec.properties.get(REAL_TOPIC, "")
        props = {k: v for k, v in rec.properties.items() if k not in (DELIVER_AT, REAL_TOPIC)}
        try:
            if not target.startswith(RETRY_PREFIX):
                raise InvalidArgumentError(f"{REAL_TOPIC} {target[:40]!r} is not a retry topic")
            self._store(target, rec, props)
        except Exception as exc:
            permanent = isinstance(exc, TailraceError) and not exc.retriable
            first = self._failing.setdefault(level, (rec.queue_offset, now_ms))
            if first[0] != rec.queue_offset:  # a new head
                first = self._failing[level] = (rec.queue_offset, now_ms)
            if not permanent and now_ms - first[1] < self.give_up_ms:
                raise
            self._dead_letter(level, rec, props, target, exc)
            self._failing.pop(level, None)
            return 0
        self._failing.pop(level, None)
        return 1

    def _dead_letter(
        self, level: int, rec: Record, props: dict[str, str], target: str, why: Exception
    ) -> None:
        """The head cannot go to `target`: to its group's dead-letter topic, or
        (that failing for good too) past it, logged and counted."""
        metrics = self.leader.core.metrics
        group = target[len(RETRY_PREFIX) :] if target.startswith(RETRY_PREFIX) else ""
        dlq = dlq_topic(group) if group else ""
        try:
            if not dlq:
                raise InvalidArgumentError("no group to dead-letter it for")
            self._store(dlq, rec, props)
        except Exception as exc:
            if isinstance(exc, TailraceError) and exc.retriable:  # nothing can be stored now: the head waits
                raise
            self._skip(
                level, rec.queue_offset, f"it can go neither to {target:.60} ({why}) nor to {dlq:.60} ({exc})"
            )
        else:
            log.warning(
                "schedule level %d: the message at %d cannot go to %.60r (%s): moved to %s",
                level, rec.queue_offset, target, why, dlq,
            )  # fmt: skip
            self.dead_lettered += 1
            metrics.schedule_dead_lettered.labels(str(level)).inc()

    def _skip(self, level: int, offset: int, why: str) -> None:
        log.error("schedule level %d: the message at %d is skipped: %s", level, offset, why)
        self.skipped += 1
        self.leader.core.metrics.schedule_skipped.labels(str(level)).inc()

    def _store(self, topic: str, rec: Record, props: dict[str, str]) -> None:
        leader = self.leader
        validate_topic(topic)
        leader.ensure_topic(topic, 1)
        msg = Message(topic, 0, rec.body, tags=rec.tags, keys=rec.keys, properties=props)
        out = leader.send(topic, 0, [msg], internal=True)
        if not out.results:  # not stored (no in-sync slave, fenced): try again later
            raise BrokerBusyError(f"moving a due message to {topic}: {out.status} {out.detail}")

    def _level_failed(self, level: int, exc: Exception) -> None:
        self.leader.core.metrics.schedule_level_failures.labels(str(level)).inc()
        now = time.monotonic()
        if now - self._logged.get(level, -1e9) < LOG_EVERY_MS / 1000:
            return
        self._logged[level] = now
        if isinstance(exc, TailraceError):
            log.warning(
                "schedule level %d: %s (retrying; logged every %d s at most)",
                level,
                exc,
                LOG_EVERY_MS // 1000,
            )
        else:
            log.error("schedule level %d failed (retrying)", level, exc_info=exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
