"""The delay-level schedule: moves due messages to their retry topics.

`SendBack` parks a failed message in the schedule topic, queue = its delay
level. Every message of one level waits the same delay, so each level's
queue is in due order: the scheduler only looks at each queue's head. Due
messages are stored in their `REAL_TOPIC` (the group's retry topic) and the
level's progress is committed as a consumer offset of `%SCHEDULER%`, through
the log like every commit: a new master after a failover carries on where
the old one stopped (a message moved just before a crash may be moved twice:
at least once). The leader role owns it: it runs while that role leads and
holds a valid lease, and stops when the role is retired.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from core.errors import TailraceError
from core.record import Message, iter_records
from core.retry import DELIVER_AT, REAL_TOPIC, SCHEDULE_TOPIC, SCHEDULER_GROUP

if TYPE_CHECKING:
    from master.leader import LeaderRole

log = logging.getLogger(__name__)
BATCH = 64


class Scheduler:
    def __init__(self, leader: LeaderRole, tick_s: float = 0.05) -> None:
        self.leader = leader
        self.tick_s = tick_s
        self.moved = 0
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
                self.run_once(int(time.time() * 1000))
            except TailraceError as exc:
                log.warning("schedule: %s (retrying)", exc)
            except Exception:
                log.exception("schedule failed")

    def run_once(self, now_ms: int) -> int:
        """Move every due message; returns how many moved."""
        leader, store = self.leader, self.leader.core.store
        levels = store.topics.queue_count(SCHEDULE_TOPIC) or 0
        moved = 0
        for level in range(levels):
            lo, _hi = store.queue_offsets(SCHEDULE_TOPIC, level)
            offset = max(lo, leader.core.offsets.query(SCHEDULER_GROUP, SCHEDULE_TOPIC, level) or 0)
            progress = [offset]
            try:
                moved += self._move_due(level, progress, now_ms)
            finally:  # progress so far is kept even when a move failed half way
                if progress[0] != offset:
                    leader.commit_offset(SCHEDULER_GROUP, SCHEDULE_TOPIC, level, progress[0])
        self.moved += moved
        return moved

    def _move_due(self, level: int, progress: list[int], now_ms: int) -> int:
        """Move the level's due head messages, keeping `progress[0]` at the
        offset after the last one moved; returns how many moved. A message
        counts as moved once it is stored (also SLAVE_TIMEOUT: stored, not
        confirmed), so it is never moved twice."""
        leader, store = self.leader, self.leader.core.store
        moved = 0
        while True:
            vis = leader.visible_end()
            read = store.read(SCHEDULE_TOPIC, level, progress[0], BATCH, 4 << 20, visible_end=vis)
            if not read.count:
                return moved
            for rec in iter_records(read.data, verify=False):
                if int(rec.properties.get(DELIVER_AT, "0")) > now_ms:
                    return moved
                target = rec.properties.get(REAL_TOPIC, "")
                if target:
                    props = {k: v for k, v in rec.properties.items() if k not in (DELIVER_AT, REAL_TOPIC)}
                    leader.ensure_topic(target, 1)
                    msg = Message(target, 0, rec.body, tags=rec.tags, keys=rec.keys, properties=props)
                    out = leader.send(target, 0, [msg], internal=True)
                    if not out.results:  # not stored (no in-sync slave, fenced): try again later
                        raise TailraceError(f"moving a due message to {target}: {out.status}")
                    moved += 1
                progress[0] = rec.queue_offset + 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
