"""Pop state per (group, topic, queue): a plain state machine, no I/O, no clock.

A queue's state is its cursor (the next offset never handed out or
passed) and its in-flight entries {offset: Entry(deadline_ms, attempt,
generation)}. Every offset in [commit, cursor) is either in flight or acked,
so acks need no table of their own: the commit point is the lowest in-flight
offset (the cursor when none is), and the group's committed offset follows
it. A pop with a tag filter passes the offsets whose tag does not match:
they are acked as the cursor moves past them (consumed for the group, as in
RocketMQ's pop), in the same record.

Every change is decided on the master (`plan_*`), written to the log as a
`pop` system record, and applied from that record everywhere
(`PopTable.apply`: the master's append, a slave's replication, recovery),
so every copy reaches the same state from the same records. The plans
refuse what must not happen (a stale generation: InvalidReceiptError; a
table over its bounds: QuotaExceededError); `apply` never refuses a record
(it was written: every copy applies it alike).

Generations are unique per queue and only grow: each hand-out or change of
invisibility takes the next one, so a receipt handle of an older hand-out
never acks or changes a newer one. They are also what makes `apply`
idempotent: a `pop` or `chg` whose generation is below the queue's next one
was applied already and is skipped (a slave re-applies a chunk after a
failed side-file write); every `pop` record takes one at least, even one
that only passes filtered offsets. An `ack` is idempotent by construction:
an acked offset is below the cursor and out of flight, and nothing puts it
back. A `rnw` (a renewal: the deadline moved, the generation kept) is
idempotent too: it applies only to the generation it names and only
moves a deadline later, so applied twice, or after the entry was handed
out again, it changes nothing. A `rst` (an operator's reset of the cursor,
or a topic deletion's reset to 0) drops the in-flight entries and takes a
generation too, so it applies once, and a receipt handle from before it
never acks what is handed out after it. A new master starts its generations at
`epoch << 32` at least (`gen_floor`), so a handle issued in a divergent tail
that a failover cut away never matches an entry the new master issued.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidArgumentError, InvalidReceiptError, QuotaExceededError

Key = tuple[str, str, int]  # (group, topic, queue)
MAX_POP_BATCH = 1024


@dataclass(frozen=True)
class Entry:
    deadline_ms: int
    attempt: int  # 1 on the first delivery
    gen: int


@dataclass(frozen=True)
class Popped:
    offset: int
    attempt: int
    gen: int
    deadline_ms: int


@dataclass
class QueueState:
    cursor: int
    next_gen: int = 1
    inflight: dict[int, Entry] = field(default_factory=dict)
    # in-flight offsets the table's deadline heap found due (PopTable._advance);
    # not part of the state a record or a snapshot carries
    due: set[int] = field(default_factory=set, compare=False, repr=False)
    # a heap of the in-flight offsets, and acked ones not yet popped from it
    low: list[int] = field(default_factory=list, compare=False, repr=False)

    @property
    def commit(self) -> int:
        low = self.low
        while low and low[0] not in self.inflight:
            heapq.heappop(low)
        return low[0] if low else self.cursor

    def add(self, offset: int, entry: Entry) -> None:
        """Put `offset` in flight (or give it a new entry)."""
        if offset not in self.inflight:
            heapq.heappush(self.low, offset)
        self.inflight[offset] = entry

    def expired(self, now_ms: int) -> list[int]:
        """In-flight offsets whose invisibility is over, lowest first (of those
        the table's last `_advance` found due: O(expired), not O(in flight))."""
        return sorted(o for o in self.due if self.inflight[o].deadline_ms <= now_ms)


class PopTable:
    """Every queue's pop state, with the bounds on in-flight entries. Thread
    safe: plans and applies take one lock (a plan is followed by the append
    of its record, under the caller's own serialization per queue)."""

    def __init__(self, max_inflight_per_queue: int = 10_000, max_inflight_per_group: int = 100_000) -> None:
        self.max_per_queue = max_inflight_per_queue
        self.max_per_group = max_inflight_per_group
        self._queues: dict[Key, QueueState] = {}
        self._per_group: dict[str, int] = {}
        # (deadline_ms, key, offset, gen) of every in-flight entry, and stale
        # ones (acked or rescheduled since: skipped when they come up)
        self._deadlines: list[tuple[int, Key, int, int]] = []
        self.lock = threading.RLock()

    # ---- reading -----------------------------------------------------------------

    def get(self, key: Key) -> QueueState | None:
        return self._queues.get(key)

    def queues(self) -> list[Key]:
        with self.lock:
            return list(self._queues)

    def commit_point(self, key: Key) -> int | None:
        with self.lock:
            q = self._queues.get(key)
            return None if q is None else q.commit

    def inflight(self, group: str) -> int:
        return self._per_group.get(group, 0)

    def busiest_group(self) -> int:
        """The most in-flight entries one group has (the per-group quota's use)."""
        return max(self._per_group.values(), default=0)

    def again(self, key: Key, now_ms: int, max_attempts: int = 1 << 30) -> list[int]:
        """The expired offsets `plan_pop` would hand out again, in its order."""
        with self.lock:
            self._advance(now_ms)
            q = self._queues.get(key)
            return [] if q is None else [o for o in q.expired(now_ms) if q.inflight[o].attempt < max_attempts]

    def expired(self, now_ms: int) -> list[tuple[Key, int, Entry]]:
        """Every expired in-flight entry: (key, offset, entry)."""
        with self.lock:
            self._advance(now_ms)
            return [
                (k, o, q.inflight[o]) for k, q in self._queues.items() if q.due for o in q.expired(now_ms)
            ]

    # ---- the deadline heap ---------------------------------------------------------

    def _schedule(self, key: Key, q: QueueState, offset: int) -> None:
        """`offset`'s entry is new or has a new deadline: not due until then."""
        e = q.inflight[offset]
        q.due.discard(offset)
        heapq.heappush(self._deadlines, (e.deadline_ms, key, offset, e.gen))

    def _advance(self, now_ms: int) -> None:
        """Move the entries whose deadline passed into their queue's `due`
        (each once per deadline: O(log n) an entry, never a walk of all)."""
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            dl, key, o, gen = heapq.heappop(heap)
            q = self._queues.get(key)
            e = None if q is None else q.inflight.get(o)
            if q is not None and e is not None and e.gen == gen and e.deadline_ms == dl:
                q.due.add(o)
        if len(heap) > 2 * sum(self._per_group.values()) + 1024:  # mostly stale: rebuilt
            self._reheap()

    def _reheap(self) -> None:
        self._deadlines = [
            (e.deadline_ms, k, o, e.gen) for k, q in self._queues.items() for o, e in q.inflight.items()
        ]
        heapq.heapify(self._deadlines)
        for q in self._queues.values():
            q.due.clear()
            q.low = sorted(q.inflight)  # (a sorted list is a heap)

    # ---- planning (on the master, before the record is written) ------------------

    def plan_pop(
        self,
        key: Key,
        start: int,
        end: int,
        max_count: int,
        invisible_ms: int,
        now_ms: int,
        gen_floor: int = 0,
        max_attempts: int = 1 << 30,
        low: int = 0,
        max_again: int = MAX_POP_BATCH,
        again: Sequence[int] | None = None,
        take: Sequence[int] | None = None,
    ) -> dict[str, Any] | None:
        """The `pop` record handing out up to `max_count` offsets of `key`:
        expired in-flight ones first (attempt + 1), then new ones from the
        cursor up to `end` (the queue's readable end). `start` is where a
        queue seen for the first time begins (the group's committed offset,
        or the queue's first); `low` is the queue's first retained offset (a
        cursor below it skips what retention removed). Expired entries already
        delivered `max_attempts` times are left for the dead-letter pass; at
        most `max_again` expired ones are taken (those the caller could read),
        or those of `again` that are expired (a tag filter's choice).
        `take` (a tag filter): the offsets of [cursor, end) to hand out, in
        order; the cursor passes the others as well, acked at once (field
        `t`, their indexes from `from`).
        None: nothing to hand out or pass.
        QuotaExceededError when the bounds leave no room at all."""
        if not 1 <= max_count <= MAX_POP_BATCH:
            raise InvalidArgumentError(f"a pop takes 1..{MAX_POP_BATCH} messages")
        if invisible_ms <= 0:
            raise InvalidArgumentError("invisible_ms must be positive")
        with self.lock:
            q = self._queues.get(key)
            cursor = start if q is None else q.cursor
            cursor = max(cursor, low, 0)
            expired = self.again(key, now_ms, max_attempts)
            if again is not None:
                wanted = set(again)
                expired = [o for o in expired if o in wanted]
            redo = expired[: min(max_count, max_again)]
            room = min(
                self.max_per_queue - (0 if q is None else len(q.inflight)),
                self.max_per_group - self.inflight(key[0]),
            )
            fits = max(0, min(max_count - len(redo), room))
            if take is None:
                span, picked = min(fits, max(0, end - cursor)), None
            else:
                offsets = [o for o in take if cursor <= o < end]
                span = max(0, end - cursor)
                if len(offsets) > fits:  # the cursor stops at the first that does not fit
                    span = offsets[fits] - cursor
                    offsets = offsets[:fits]
                picked = (
                    None if offsets == list(range(cursor, cursor + span)) else [o - cursor for o in offsets]
                )
            if not redo and span == 0:
                if room <= 0 and end > cursor:
                    raise QuotaExceededError(self._full_why(key, q))
                return None
            gen = max(gen_floor, 1 if q is None else q.next_gen)
            plan = {
                "op": "pop",
                "group": key[0],
                "topic": key[1],
                "queue": key[2],
                "from": cursor,
                "n": span,
                "re": redo,
                "dl": now_ms + invisible_ms,
                "gen": gen,
                "c": cursor if q is None else q.commit,
            }
            if picked is not None:
                plan["t"] = picked
            return plan

    def _full_why(self, key: Key, q: QueueState | None) -> str:
        if q is not None and len(q.inflight) >= self.max_per_queue:
            return (
                f"{self.max_per_queue} messages of {key[1]!r} queue {key[2]} are in flight for group "
                f"{key[0]!r} (quotas.max_pop_inflight_per_queue): ack some first"
            )
        return (
            f"{self.max_per_group} messages are in flight for group {key[0]!r} "
            "(quotas.max_pop_inflight_per_group): ack some first"
        )

    def _live(self, key: Key, offset: int, gen: int) -> QueueState:
        q = self._queues.get(key)
        entry = None if q is None else q.inflight.get(offset)
        if q is None or entry is None:
            raise InvalidReceiptError(
                f"offset {offset} of {key[1]!r} queue {key[2]} is not in flight (acked?)"
            )
        if entry.gen != gen:
            raise InvalidReceiptError(
                f"offset {offset} of {key[1]!r} queue {key[2]} was handed out again since this receipt "
                "(its invisibility changed or it came back): use the newest receipt handle"
            )
        return q

    def plan_ack(self, key: Key, offset: int, gen: int) -> dict[str, Any]:
        """The `pop` record acking `offset`; InvalidReceiptError for a stale generation."""
        plan, (error,) = self.plan_acks(key, [(offset, gen)])
        if error is not None:
            raise error
        assert plan is not None
        return plan

    def plan_acks(
        self, key: Key, receipts: Sequence[tuple[int, int]]
    ) -> tuple[dict[str, Any] | None, list[InvalidReceiptError | None]]:
        """One `pop` record acking every live (offset, generation) of
        `receipts` (None: none is), and per receipt, in order, None or why it
        is refused (a stale generation; an offset named twice: the second)."""
        acked: list[int] = []
        errors: list[InvalidReceiptError | None] = []
        with self.lock:
            for offset, gen in receipts:
                try:
                    if offset in acked:
                        raise InvalidReceiptError(
                            f"offset {offset} of {key[1]!r} queue {key[2]} is acked by an earlier "
                            "receipt handle of this call"
                        )
                    self._live(key, offset, gen)
                except InvalidReceiptError as exc:
                    errors.append(exc)
                    continue
                acked.append(offset)
                errors.append(None)
        if not acked:
            return None, errors
        return {"op": "ack", "group": key[0], "topic": key[1], "queue": key[2], "o": acked}, errors

    def plan_change(
        self, key: Key, offset: int, gen: int, invisible_ms: int, now_ms: int, gen_floor: int = 0
    ) -> dict[str, Any]:
        """The `pop` record moving `offset`'s deadline to now + invisible_ms
        under a new generation (a new receipt handle)."""
        if invisible_ms < 0:
            raise InvalidArgumentError("invisible_ms must not be negative")
        with self.lock:
            q = self._live(key, offset, gen)
            return {
                "op": "chg",
                "group": key[0],
                "topic": key[1],
                "queue": key[2],
                "o": offset,
                "dl": now_ms + invisible_ms,
                "gen": max(gen_floor, q.next_gen),
            }

    def plan_renew(self, key: Key, offset: int, gen: int, invisible_ms: int, now_ms: int) -> dict[str, Any]:
        """The `pop` record extending `offset`'s deadline to now +
        invisible_ms under the **same** generation (its receipt handle stays
        good: a proxy renews a push consumer's handle behind its back);
        InvalidReceiptError for a stale generation. A deadline only grows."""
        if invisible_ms <= 0:
            raise InvalidArgumentError("a renewal's invisible_ms must be positive")
        with self.lock:
            self._live(key, offset, gen)
            return {
                "op": "rnw",
                "group": key[0],
                "topic": key[1],
                "queue": key[2],
                "o": offset,
                "gen": gen,
                "dl": now_ms + invisible_ms,
            }

    def plan_reset(self, key: Key, to: int, gen_floor: int = 0) -> dict[str, Any]:
        """The `pop` record moving `key`'s cursor to `to` and dropping its
        in-flight entries (an operator's reset; a topic deletion resets to 0)."""
        if isinstance(to, bool) or not isinstance(to, int) or to < 0:
            raise InvalidArgumentError(f"a pop cursor is a queue offset, not {to!r}")
        with self.lock:
            q = self._queues.get(key)
            gen = max(gen_floor, 1 if q is None else q.next_gen)
            return {"op": "rst", "group": key[0], "topic": key[1], "queue": key[2], "to": to, "gen": gen}

    # ---- applying (every copy, from the record) ----------------------------------

    def apply(self, p: Mapping[str, Any]) -> list[Popped]:
        """Apply a `pop` record; returns what a `pop` handed out. Raises
        KeyError/TypeError/ValueError on a malformed record (skipped and
        counted by the store), leaving the state unchanged."""
        key: Key = (str(p["group"]), str(p["topic"]), int(p["queue"]))
        op = p["op"]
        with self.lock:
            if op == "pop":
                return self._apply_pop(key, p)
            q = self._queues.get(key)
            if op == "ack":
                offsets = [int(o) for o in p["o"]]
                for o in offsets:
                    if q is not None and q.inflight.pop(o, None) is not None:
                        q.due.discard(o)
                        self._count(key[0], -1)
            elif op == "chg":
                o, dl, gen = int(p["o"]), int(p["dl"]), int(p["gen"])
                if q is not None and gen >= q.next_gen and o in q.inflight:
                    q.inflight[o] = Entry(dl, q.inflight[o].attempt, gen)
                    self._schedule(key, q, o)
                    q.next_gen = max(q.next_gen, gen + 1)
            elif op == "rnw":  # idempotent: a deadline only grows, and only the named generation's
                o, dl, gen = int(p["o"]), int(p["dl"]), int(p["gen"])
                e = None if q is None else q.inflight.get(o)
                if q is not None and e is not None and e.gen == gen and dl > e.deadline_ms:
                    q.inflight[o] = Entry(dl, e.attempt, gen)
                    self._schedule(key, q, o)
            elif op == "rst":  # applied once, like a pop: its generation is then below next_gen
                to, gen = int(p["to"]), int(p["gen"])
                if to < 0:
                    raise ValueError("negative cursor")
                if q is None or gen >= q.next_gen:
                    if q is not None:
                        self._count(key[0], -len(q.inflight))
                    self._queues[key] = QueueState(to, gen + 1)  # old handles stay stale
            else:
                raise ValueError(f"unknown pop operation {op!r}")
            return []

    def on_record(self, payload: dict[str, Any]) -> None:
        """The store's handler of `pop` records (core/store/system.py)."""
        self.apply(payload)

    def _apply_pop(self, key: Key, p: Mapping[str, Any]) -> list[Popped]:
        start, n, dl, gen = int(p["from"]), int(p["n"]), int(p["dl"]), int(p["gen"])
        again = [int(o) for o in p["re"]]
        picked = None if p.get("t") is None else [int(i) for i in p["t"]]
        if n < 0 or start < 0:
            raise ValueError("negative count or offset")
        if picked is not None and (any(not 0 <= i < n for i in picked) or picked != sorted(set(picked))):
            raise ValueError("taken offsets must be increasing and inside the span")
        q = self._queues.get(key)
        if q is not None and gen < q.next_gen:
            return []  # applied already (a slave re-applying a chunk): a no-op
        if q is None:
            # first seen (a new queue, or its earlier records are gone from the
            # log): what lay between the commit point and the cursor then is
            # unknown, so all of it counts as in flight and expired (redelivered:
            # at least once). No cap: one from the config would skip unacked
            # messages and make copies with different configs disagree.
            commit = min(int(p.get("c", start)), start)
            q = self._queues[key] = QueueState(start)
            for o in range(commit, start):
                q.add(o, Entry(0, 1, 0))
                self._schedule(key, q, o)
                self._count(key[0], 1)
        out = []
        for i, o in enumerate(again):
            old = q.inflight.get(o)
            if old is None:
                self._count(key[0], 1)
            entry = Entry(dl, (old.attempt if old else 0) + 1, gen + i)
            q.add(o, entry)
            self._schedule(key, q, o)
            out.append(Popped(o, entry.attempt, entry.gen, dl))
        base = max(q.cursor, start)
        taken = range(n) if picked is None else picked
        for j, i in enumerate(taken):
            entry = Entry(dl, 1, gen + len(again) + j)
            q.add(base + i, entry)
            self._schedule(key, q, base + i)
            out.append(Popped(base + i, 1, entry.gen, dl))
        self._count(key[0], len(taken))
        q.cursor = base + n
        # at least one generation per record, even one that hands out nothing
        # (it only passed filtered offsets): applied again, it is skipped
        q.next_gen = max(q.next_gen, gen + max(1, len(again) + len(taken)))
        return out

    def _count(self, group: str, delta: int) -> None:
        left = self._per_group.get(group, 0) + delta
        if left > 0:
            self._per_group[group] = left
        else:
            self._per_group.pop(group, None)

    # ---- snapshots and rebuilding --------------------------------------------------

    def restore(self, queues: Mapping[Key, QueueState]) -> None:
        """Replace the whole table (a snapshot, core/pop/snapshot.py)."""
        with self.lock:
            self._queues = dict(queues)
            self._per_group = {}
            for key, q in self._queues.items():
                self._count(key[0], len(q.inflight))
            self._reheap()

    # ---- rebuilding (a truncation cut the log) -----------------------------------

    def rebuild(self, keys: Iterable[Key], payloads: Iterable[Mapping[str, Any]]) -> None:
        """Forget `keys` and replay their records from `payloads` (the
        retained log before the cut, in log order); malformed records are
        skipped, as they were when first applied."""
        wanted = set(keys)
        with self.lock:
            for key in wanted:
                q = self._queues.pop(key, None)
                if q is not None:
                    self._count(key[0], -len(q.inflight))
            for p in payloads:
                try:
                    if (str(p["group"]), str(p["topic"]), int(p["queue"])) in wanted:
                        self.apply(p)
                except (KeyError, TypeError, ValueError):
                    continue
