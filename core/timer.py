"""Delivery at a given time: the timer's records and its state, as plain logic.

A send whose messages carry a `deliver_at_ms` in the future is stored at once
in the timer's wait queue (`%TIMER%` queue 0) with its real topic, queue and
delivery time in properties (`to_timer`); the master's timer
(master/timer.py) stores it in its real topic once due (`from_timer`),
never before. What is done is recorded in the timer's progress queue
(`%TIMER%` queue 1) as JSON records, through the log like every commit:

- a *delta* after each pass: `{"kind": "delta", "low": L, "done": [...]}`,
  the wait-queue offsets delivered (or rolled, or skipped) since the last
  record, and `low`, below which every offset is done (in parts of at most
  `chunk` offsets too, each standing alone);
- a *snapshot* now and then: `{"kind": "snapshot", "low": L, "done": [...],
  "part": i, "parts": n}`, every done offset at or above `low`, in `n`
  records of at most `chunk` offsets (each under the store's
  `max_message_bytes`), counted once the last part is read. The queue offset
  of its first part is committed as group `%TIMER%`'s offset on the
  progress queue (and `low` on the wait queue: retention keeps what the
  timer still needs).

Those commits are retention's floor, so they follow what is pending
(`TimerState.progress`): `low` is committed once it moved (every COMMIT_MS
at most), a snapshot comes SNAPSHOT_MS after a mark at the latest, and with
nothing done above `low` no snapshot is needed: the progress queue's end is
committed (a *release*), and a drained timer holds nothing back.

`TimerState` is the heap and that bookkeeping, with time passed in. Rebuild
(a restart, a promotion) starts from the committed `low`, applies the
progress from the committed snapshot on, then loads the wait queue from
`low`. Both are bounded by what is still pending: a snapshot is written
once the marks since the last one outnumber it (or SNAPSHOT_MIN), and the
oldest pending messages are *rolled* (a copy appended to the wait queue,
the original marked done) while the done offsets above `low` outnumber the
pending ones by more than ROLL_SLACK.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import BrokerBusyError, InvalidArgumentError, brief
from core.record import Message, Record, validate_topic
from core.retry import REAL_TOPIC, is_reserved

TIMER_TOPIC = "%TIMER%"
TIMER_GROUP = "%TIMER%"  # its offsets: `low` on the wait queue, the last snapshot on the progress queue
WAIT_QUEUE = 0
PROGRESS_QUEUE = 1
TIMER_QUEUES = 2
REAL_QID = "REAL_QID"  # RocketMQ's names
DELIVER_MS = "TIMER_DELIVER_MS"  # the delivery time asked (epoch ms); the delivered message keeps it
DEFAULT_MAX_DELAY_MS = 3 * 86_400_000  # RocketMQ's timerMaxDelaySec
SNAPSHOT_MIN = 4096  # done marks written since the last snapshot before the next one
ROLL_SLACK = 4096  # done offsets above `low` tolerated beyond the pending count
ROLL_RATIO = 1.0  # body bytes rolled at most per body byte delivered (or skipped)
COMMIT_MS = 5_000  # `low` moved: committed on the wait queue at most this long after
SNAPSHOT_MS = 60_000  # marks written since the last snapshot: a new one at most this long after


def delayed(messages: Sequence[Message], now_ms: int, max_delay_ms: int) -> bool:
    """Whether a send goes to the timer: some message is due after `now_ms`.
    A time past `max_delay_ms` from now refuses the whole send."""
    latest = 0
    for m in messages:
        at = m.deliver_at_ms
        if type(at) is not int or at < 0:
            raise InvalidArgumentError(f"deliver_at_ms must be a non-negative integer, got {at!r}")
        latest = max(latest, at)
    if latest > now_ms + max_delay_ms:
        raise InvalidArgumentError(
            f"deliver_at_ms {latest} is {latest - now_ms} ms ahead: at most broker.max_delay_ms "
            f"({max_delay_ms}) ahead; nothing stored"
        )
    return latest > now_ms


def to_timer(m: Message, topic: str, queue_id: int, now_ms: int) -> Message:
    """The wait-queue record of a message for (topic, queue_id). A message of
    a delayed batch that is due already keeps its own (past) time: the timer
    stores it at its next pass, with the rest of its batch stored whole."""
    props = dict(m.properties or {})
    props[REAL_TOPIC], props[REAL_QID] = topic, str(queue_id)
    props[DELIVER_MS] = str(max(m.deliver_at_ms, 0) or now_ms)
    return Message(TIMER_TOPIC, WAIT_QUEUE, m.body, m.tags, m.keys, props, m.flags, m.born_ms)


def due_of(rec: Record) -> int:
    raw = rec.properties.get(DELIVER_MS, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise InvalidArgumentError(f"{DELIVER_MS} {brief(raw, 40)} is not a time in ms")
    return int(raw)


def from_timer(rec: Record) -> tuple[str, int, Message]:
    """(topic, queue, message) a due wait-queue record is stored as: its
    body, tags, keys, flags, born time and properties, `DELIVER_MS` kept.
    InvalidArgumentError when it names no valid destination (for good)."""
    props = dict(rec.properties)
    topic, qid = props.pop(REAL_TOPIC, ""), props.pop(REAL_QID, "")
    validate_topic(topic)
    if is_reserved(topic):
        raise InvalidArgumentError(f"{REAL_TOPIC} {brief(topic, 40)} is one of the broker's topics")
    if not qid.isascii() or not qid.isdigit() or len(qid) > 5:
        raise InvalidArgumentError(f"{REAL_QID} {brief(qid, 40)} is not a queue id")
    due_of(rec)
    msg = Message(topic, int(qid), rec.body, rec.tags, rec.keys, props, rec.flags, rec.born_ms)
    return topic, int(qid), msg


def check_room(pending: int, pending_bytes: int, adding: Sequence[Message], limits: tuple[int, int]) -> None:
    """Refuse (retriable: the timer drains) a send that would take the timer
    past `limits` = (max pending messages, max pending body bytes)."""
    max_count, max_bytes = limits
    nbytes = sum(len(m.body) for m in adding)
    if pending + len(adding) > max_count or pending_bytes + nbytes > max_bytes:
        raise BrokerBusyError(
            f"the timer holds {pending} messages ({pending_bytes} bytes) due later: at most "
            f"broker.timer_max_pending ({max_count}) and broker.timer_max_pending_bytes ({max_bytes}); "
            "nothing stored, try again later"
        )


def progress_chunk(max_message_bytes: int) -> int:
    """Offsets one progress record holds at most, so that it stays under the
    store's `max_message_bytes`: 20 bytes each at worst (19 digits and a
    comma), 512 for the rest (the record's header and topic, the JSON keys)."""
    return max(1, (max_message_bytes - 512) // 20)


def encode_progress(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_progress(body: bytes) -> dict[str, Any]:
    """A progress record's payload; InvalidArgumentError when it is not one.
    A snapshot record is one `part` of `parts` (both absent: the only one)."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidArgumentError(f"not JSON: {exc}") from None
    if (
        not isinstance(payload, dict)
        or payload.get("kind") not in ("delta", "snapshot")
        or type(payload.get("low")) is not int
        or not isinstance(payload.get("done"), list)
        or not all(type(x) is int and x >= 0 for x in payload["done"])
    ):
        raise InvalidArgumentError("not a timer progress record")
    part, parts = payload.setdefault("part", 0), payload.setdefault("parts", 1)
    if type(part) is not int or type(parts) is not int or not 0 <= part < parts:
        raise InvalidArgumentError(f"not a timer progress record (part {part!r} of {parts!r})")
    return payload


@dataclass(frozen=True, slots=True)
class Progress:
    """What one pass writes, decided by `TimerState.progress`: `records`
    appended to the progress queue (in order), then group `%TIMER%`'s
    commits: `commit_low` on the wait queue (None: none), and on the
    progress queue the queue offset of the snapshot's first record
    (`snapshot`), or the queue's end (`release`: nothing above `low` is
    done, so a rebuild needs no record, only `low`)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    snapshot: bool = False
    release: bool = False
    commit_low: int | None = None


class TimerState:
    """The pending messages of the wait queue (a heap by due time) and what
    is done, as offsets of the wait queue. No store, no thread, no clock."""

    def __init__(
        self,
        roll_slack: int = ROLL_SLACK,
        snapshot_min: int = SNAPSHOT_MIN,
        roll_ratio: float = ROLL_RATIO,
        chunk: int = progress_chunk(4 << 20),
        commit_ms: int = COMMIT_MS,
        snapshot_ms: int = SNAPSHOT_MS,
    ) -> None:
        self.roll_slack = roll_slack
        self.snapshot_min = snapshot_min
        self.roll_ratio = roll_ratio
        self.roll_credit = (
            0.0  # body bytes rolls may still copy: roll_ratio x those delivered, less those rolled
        )
        self.chunk = chunk  # offsets per progress record at most
        self.commit_ms = commit_ms
        self.snapshot_ms = snapshot_ms
        self.low = 0  # every wait-queue offset below is done
        self.loaded = 0  # the next wait-queue offset to load
        self.done: set[int] = set()  # done offsets at or above `low`
        self.pending: dict[int, tuple[int, int]] = {}  # offset -> (due ms, body bytes)
        self.pending_bytes = 0
        self._heap: list[tuple[int, int]] = []  # (when to try, offset); stale once not pending
        self._out: set[int] = set()  # handed out by pop_due, neither done nor put back yet
        self._delta: list[int] = []  # marks not written yet
        self._since_snapshot = 0
        self._snapshot_size = 0
        self._parts: tuple[int, list[int]] | None = None  # a snapshot read back: parts so far, offsets
        self.committed_low: int | None = None  # `low` as committed on the wait queue
        self.pinned = False  # progress records at or after the progress queue's commit (a rebuild reads them)
        self._commit_at: int | None = None  # (monotonic ms) the last commit of `low`
        self._snapshot_at: int | None = None  # (monotonic ms) the last snapshot or release

    # ---- rebuild -------------------------------------------------------------------

    def apply(self, payload: Mapping[str, Any]) -> None:
        """A progress record read back (in log order). A snapshot's parts
        count once its last part is read: parts are appended together, and
        an incomplete snapshot (a torn write) only repeats what came before."""
        if payload["kind"] == "snapshot":
            part, offsets = payload.get("part", 0), list(payload["done"])
            if part:
                if self._parts is None or self._parts[0] != part:
                    self._parts = None
                    return
                offsets = self._parts[1] + offsets
            if part + 1 < payload.get("parts", 1):
                self._parts = (part + 1, offsets)
                return
            self._parts = None
            self.done = {x for x in offsets if x >= self.low}
            self._snapshot_size = len(offsets)
            self._since_snapshot = 0
        else:
            self._parts = None
            self.done.update(x for x in payload["done"] if x >= self.low)
            self._since_snapshot += len(payload["done"])
        old, new = self.low, max(self.low, payload["low"])
        if new - old < len(self.done):
            self.done.difference_update(range(old, new))
        else:
            self.done = {x for x in self.done if x >= new}
        self.low = new
        self._advance()

    # ---- the wait queue -------------------------------------------------------------

    def load(self, offset: int, due_ms: int, size: int) -> bool:
        """The wait-queue record at `offset` (the next one, `loaded`);
        False when it is done already (it is not pending)."""
        if offset != self.loaded:
            raise ValueError(f"loading {offset}, expected {self.loaded}")
        self.loaded += 1
        if offset < self.low or offset in self.done:
            return False
        self.pending[offset] = (due_ms, size)
        self.pending_bytes += size
        heapq.heappush(self._heap, (due_ms, offset))
        return True

    def skip(self, offset: int) -> None:
        """The next record is no timer message (it does not decode): done."""
        if offset != self.loaded:
            raise ValueError(f"skipping {offset}, expected {self.loaded}")
        self.loaded += 1
        self.mark_done(offset)

    def pop_due(self, now_ms: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` pending (offset, due) due at `now_ms`, earliest first.
        They stay pending until `mark_done`, or `retry_at` puts them back."""
        out: list[tuple[int, int]] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= now_ms:
            _, offset = heapq.heappop(heap)
            entry = self.pending.get(offset)
            if entry is not None and offset not in self._out:  # (else stale: done, or out already)
                self._out.add(offset)
                out.append((offset, entry[0]))
        return out

    def retry_at(self, offset: int, when_ms: int) -> None:
        if offset in self.pending and offset in self._out:
            self._out.discard(offset)
            heapq.heappush(self._heap, (when_ms, offset))

    def mark_done(self, offset: int, rolled: bool = False) -> None:
        """Delivered, skipped, or `rolled` (its copy appended): done for good."""
        entry = self.pending.pop(offset, None)
        self._out.discard(offset)
        if entry is not None:
            self.pending_bytes -= entry[1]
            self.roll_credit += -entry[1] if rolled else self.roll_ratio * entry[1]
        if offset >= self.low:
            self.done.add(offset)
        self._delta.append(offset)
        self._since_snapshot += 1
        self._advance()
        if len(self._heap) > 2 * len(self.pending) + self.roll_slack:  # mostly stale: compact
            self._heap = [(due, off) for off, (due, _) in self.pending.items() if off not in self._out]
            heapq.heapify(self._heap)

    def _advance(self) -> None:
        while self.low in self.done:
            self.done.discard(self.low)
            self.low += 1
        self.loaded = max(self.loaded, self.low)

    def due(self, now_ms: int) -> bool:
        """Whether something is to be tried at `now_ms` (the timer's thread
        makes its next pass at once: a pass stores BATCH messages at most)."""
        heap = self._heap
        while heap and heap[0][1] not in self.pending:
            heapq.heappop(heap)
        return bool(heap) and heap[0][0] <= now_ms

    def next_due(self) -> int | None:
        """The earliest due time pending (for the lag metric)."""
        heap = self._heap
        while heap and heap[0][1] not in self.pending:
            heapq.heappop(heap)
        return self.pending[heap[0][1]][0] if heap else None

    # ---- bounds ---------------------------------------------------------------------

    def to_roll(self, limit: int, max_bytes: int) -> list[int]:
        """The oldest pending offsets to roll (copy to the end, mark done)
        while done offsets above `low` outnumber pending ones by more than
        `roll_slack`; [] otherwise. Keeps the window `low`..`loaded`, what a
        rebuild reads, at most twice the pending count plus the slack, as
        long as the roll credit lasts: the body bytes rolled stay under
        `roll_ratio` times those delivered, so a few large messages far
        ahead under a stream of small ones cost a bounded share of writes
        (past it, done offsets pile up: a larger snapshot and rebuild, not
        body bytes). At most `limit` offsets and `max_bytes` (one at least)."""
        if len(self.done) <= len(self.pending) + self.roll_slack:
            return []
        out: list[int] = []
        total, offset = 0, self.low
        while offset < self.loaded and len(out) < limit:
            entry = self.pending.get(offset)
            if entry is not None and offset not in self._out:
                size = entry[1]
                if total + size > self.roll_credit or (out and total + size > max_bytes):
                    break  # (rolling a later one would not move `low`)
                out.append(offset)
                total += size
            offset += 1
        return out

    # ---- progress records -------------------------------------------------------------

    def progress(self, now_ms: int, final: bool = False) -> Progress | None:
        """What to write after a pass (None: nothing), `now_ms` on a
        monotonic clock; `final` for a stopping timer (commits not delayed).

        - nothing above `low` is done (and something was written or `low`
          moved since the last commit): *release*, no record: `low` is
          committed on the wait queue and the progress queue's end on that
          queue, so the timer holds back retention from its oldest pending
          message only, and from nothing once drained;
        - a *snapshot* (every done offset above `low`, in parts of at most
          `chunk` offsets) once the marks since the last one outnumber it (and
          `snapshot_min`), or `snapshot_ms` after a mark (one ms per done
          offset if longer: a large snapshot by time costs at most about
          20 bytes a ms);
        - else a *delta* of the marks not written yet, and `low` committed
          once it moved, `commit_ms` after the last commit.

        Releases and commits wait `commit_ms` from the last commit; so the
        timer's hold on retention trails what is pending by `commit_ms`
        (`low`) and `snapshot_ms` (the snapshot) at most."""
        if self._commit_at is None:
            self._commit_at = now_ms
        if self._snapshot_at is None:
            self._snapshot_at = now_ms
        moved = self.low != self.committed_low
        commit_due = final or now_ms - self._commit_at >= self.commit_ms
        if not self.done:
            if commit_due and (moved or self.pinned or self._delta):
                return Progress(release=True, commit_low=self.low)
        elif self._since_snapshot >= max(self.snapshot_min, self._snapshot_size) or (
            self._since_snapshot and now_ms - self._snapshot_at >= max(self.snapshot_ms, len(self.done))
        ):
            return Progress(self._split("snapshot", sorted(self.done)), snapshot=True, commit_low=self.low)
        records = self._split("delta", sorted(set(self._delta))) if self._delta else []
        low = self.low if moved and commit_due else None
        return Progress(records, commit_low=low) if records or low is not None else None

    def _split(self, kind: str, offsets: list[int]) -> list[dict[str, Any]]:
        """Records of at most `chunk` offsets each (at least one record). A
        delta's parts stand alone; a snapshot's count together."""
        n = self.chunk
        chunks = [offsets[i : i + n] for i in range(0, len(offsets), n)] or [[]]
        if kind == "delta":
            return [{"kind": kind, "low": self.low, "done": c} for c in chunks]
        low, k = self.low, len(chunks)
        return [{"kind": kind, "low": low, "done": c, "part": i, "parts": k} for i, c in enumerate(chunks)]

    def written(self, plan: Progress, now_ms: int) -> None:
        """`plan`'s records are written (its commits follow, `committed`)."""
        self._delta.clear()
        if plan.snapshot or plan.release:
            self._snapshot_size = sum(len(r["done"]) for r in plan.records)
            self._since_snapshot = 0
            self._snapshot_at = now_ms
        if plan.records:
            self.pinned = True

    def committed(self, plan: Progress, now_ms: int) -> None:
        """`plan`'s commits are made."""
        if plan.commit_low is not None:
            self.committed_low = plan.commit_low
            self._commit_at = now_ms
        if plan.release:
            self.pinned = False
