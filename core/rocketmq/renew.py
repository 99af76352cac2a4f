"""Auto-renew of push consumers' messages (`auto_renew` receives), as
RocketMQ's proxy renews them: a handed-out message stays invisible while
its consumer's handler runs, however long the client's cache makes it
wait, instead of coming back after one `auto_renew_invisible_ms`.

`RenewTable` is the decision, a plain object (time passed in): which
handles to renew, when, and when to stop. A handle is renewed
`ahead_s` before its estimated deadline (counted from before the pop, so
never late), by one slice (`slice_ms`, the receive's invisible time) at a
time, keeping the handle (the master's renewal keeps its generation):

- while its client is alive: a Telemetry stream of its client id is open
  on this proxy, or a Heartbeat came within `alive_s`;
- until it is acked, changed or forwarded through this proxy (`forget`), a
  renewal fails with INVALID_RECEIPT_HANDLE (settled elsewhere, or handed
  out again), or `max_total_s` passed since it was handed out (a handler
  stuck that long lets the message go to another consumer);
- a renewal that fails otherwise is tried again every `retry_s` until the
  handle's deadline passes.

At most `max_handles` are tracked; past that a new handle is not renewed
(at least once: it comes back after its invisible time). Nothing here is
durable: a restarted proxy renews nothing it handed out before.

`Renewer` runs the table: one thread waiting on the heap's next time,
renewing serially through the backend (a master write each).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidReceiptError, TailraceError

log = logging.getLogger(__name__)
AHEAD_S = 10.0  # renewed this long before its deadline (RocketMQ's renewAheadTimeMillis)
RETRY_S = 1.0
RENEW_TIMEOUT_S = 2.0


@dataclass
class Held:
    """A handed-out message being renewed."""

    handle: str
    client: str
    broker: str
    group: str
    topic: str
    since: float  # when it was handed out (the clock's seconds)
    deadline: float  # its invisibility ends by then at the latest
    due: float  # its next renewal


class RenewTable:
    def __init__(
        self,
        slice_ms: int,
        max_total_s: float = 900.0,
        max_handles: int = 100_000,
        alive_s: float = 30.0,
        ahead_s: float = AHEAD_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.slice_s = slice_ms / 1000
        self.ahead_s = min(ahead_s, self.slice_s / 2)  # (a short slice: renewed at half of it)
        self.max_total_s = max_total_s
        self.max_handles = max_handles
        self.alive_s = alive_s
        self.retry_s = retry_s
        self._held: dict[str, Held] = {}
        self._heap: list[tuple[float, str]] = []  # (due, handle); stale ones skipped
        self._seen: dict[str, float] = {}  # client id -> its last Heartbeat
        self._streams: Counter[str] = Counter()  # client id -> its open Telemetry streams
        self.not_tracked = 0  # handles refused for want of room
        self.renewals = 0
        self.lock = threading.Lock()

    # ---- the clients ------------------------------------------------------------------

    def seen(self, client: str, now: float) -> None:
        """A Heartbeat (or any sign of life) of `client`."""
        if not client:
            return
        with self.lock:
            self._seen[client] = now
            if len(self._seen) > 2 * self.max_handles:  # bounded: the long silent go
                self._seen = {c: t for c, t in self._seen.items() if now - t <= self.alive_s}

    def opened(self, client: str) -> None:
        if client:
            with self.lock:
                self._streams[client] += 1

    def closed(self, client: str, now: float) -> None:
        if client:
            with self.lock:
                self._streams[client] -= 1
                if self._streams[client] <= 0:
                    del self._streams[client]
                self._seen[client] = now  # alive until now: the window counts from here

    def alive(self, client: str, now: float) -> bool:
        with self.lock:
            return self._alive(client, now)

    def _alive(self, client: str, now: float) -> bool:
        return self._streams[client] > 0 or now - self._seen.get(client, -1e18) <= self.alive_s

    # ---- the handles ------------------------------------------------------------------

    def track(
        self, client: str, broker: str, group: str, topic: str, handles: Iterable[str], popped_at: float
    ) -> int:
        """Renew `handles` (handed out by a pop that started at
        `popped_at`) for `client`; how many are tracked (none without a
        client id: its life cannot be told)."""
        if not client:
            return 0
        deadline = popped_at + self.slice_s
        n = 0
        with self.lock:
            for h in handles:
                if h not in self._held and len(self._held) >= self.max_handles:
                    self.not_tracked += 1
                    continue
                held = Held(h, client, broker, group, topic, popped_at, deadline, deadline - self.ahead_s)
                self._held[h] = held
                heapq.heappush(self._heap, (held.due, h))
                n += 1
        return n

    def forget(self, handle: str) -> None:
        """Acked, changed or forwarded: renewed no more."""
        with self.lock:
            self._held.pop(handle, None)

    def due(self, now: float) -> list[Held]:
        """The handles to renew now (copies). Handles whose client is gone,
        or handed out `max_total_s` ago, are dropped here: they come back
        after their current invisibility."""
        out = []
        with self.lock:
            while self._heap and self._heap[0][0] <= now:
                at, h = heapq.heappop(self._heap)
                held = self._held.get(h)
                if held is None or held.due != at:
                    continue  # forgotten, or rescheduled since
                if not self._alive(held.client, now) or now - held.since >= self.max_total_s:
                    del self._held[h]
                    continue
                out.append(Held(**vars(held)))
        return out

    def renewed(self, handle: str, sent_at: float) -> None:
        """A renewal sent at `sent_at` succeeded: invisible a slice from then at least."""
        with self.lock:
            held = self._held.get(handle)
            if held is None:
                return
            self.renewals += 1
            held.deadline = sent_at + self.slice_s
            held.due = held.deadline - self.ahead_s
            heapq.heappush(self._heap, (held.due, handle))

    def failed(self, handle: str, now: float) -> None:
        """A renewal failed without settling the question: tried again in
        `retry_s` while the handle may still be invisible, else dropped."""
        with self.lock:
            held = self._held.get(handle)
            if held is None:
                return
            if now + self.retry_s >= held.deadline:
                del self._held[handle]
                return
            held.due = now + self.retry_s
            heapq.heappush(self._heap, (held.due, handle))

    def next_at(self) -> float | None:
        with self.lock:
            while self._heap and (
                self._heap[0][1] not in self._held or self._held[self._heap[0][1]].due != self._heap[0][0]
            ):
                heapq.heappop(self._heap)
            return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._held)


class RenewBackend(Protocol):
    def renew(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> int: ...


class Renewer:
    """The table's thread: renews what is due, one call at a time."""

    def __init__(
        self, backend: RenewBackend, table: RenewTable, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backend = backend
        self.table = table
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auto-renew", daemon=True)

    def run_once(self, now: float) -> int:
        """Renew every handle due at `now`; how many were renewed."""
        done = 0
        slice_ms = int(self.table.slice_s * 1000)
        for held in self.table.due(now):
            sent = self.clock()
            try:
                self.backend.renew(
                    held.broker, held.group, held.topic, held.handle, slice_ms, RENEW_TIMEOUT_S
                )
            except InvalidReceiptError:  # acked elsewhere, changed, handed out again: nothing to keep
                self.table.forget(held.handle)
                continue
            except TailraceError as exc:
                log.info("renewing a handle on %s failed (tried again soon): %s", held.broker, exc)
                self.table.failed(held.handle, self.clock())
                continue
            self.table.renewed(held.handle, sent)
            done += 1
        return done

    def track(
        self, client: str, broker: str, group: str, topic: str, handles: Iterable[str], popped_at: float
    ) -> None:
        if self.table.track(client, broker, group, topic, handles, popped_at):
            self._wake.set()  # the heap's next time may be sooner now

    def forget(self, handle: str) -> None:
        self.table.forget(handle)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = self.table.next_at()
            wait = None if at is None else max(0.0, at - self.clock())
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once(self.clock())
            except Exception:  # a last resort: the next round tries again
                log.exception("auto-renew failed")
