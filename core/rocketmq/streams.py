"""How many Telemetry streams the proxy holds open at once.

Each open stream holds one server thread for as long as the client lives
(the sync gRPC server has no other way to wait on a client's next
command), so without a cap a few dozen clients would take every thread and
starve SendMessage and QueryRoute. The gate admits a stream while fewer
than `max_streams` are open in all and fewer than `max_per_account` for
its caller's account (anonymous callers share one); the rest are answered
`TOO_MANY_REQUESTS` at once and closed. Held receives have a gate of
their own.

`Deadlines` and `DeadlineWatch` bound how long a receive's frames may take
to be written: grpc's sync server writes each frame on the handler's thread
and waits until flow control lets it out, so a client that stops reading
would hold that thread until its own deadline (which it picks).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)


class StreamGate:
    def __init__(self, max_streams: int, max_per_account: int, what: str = "Telemetry streams") -> None:
        self.what = what
        self.max_streams = max_streams
        self.max_per_account = max_per_account
        self._open: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def enter(self, account: str) -> str | None:
        """None: admitted (call `leave` once it ends); else why not."""
        with self._lock:
            if self._total >= self.max_streams:
                return f"this proxy holds its most {self.what} ({self.max_streams}); try later"
            if self._open[account] >= self.max_per_account:
                return f"{account} holds its most {self.what} ({self.max_per_account}); try later"
            self._open[account] += 1
            self._total += 1
            return None

    def leave(self, account: str) -> None:
        with self._lock:
            self._open[account] -= 1
            if self._open[account] <= 0:
                del self._open[account]
            self._total -= 1

    def open_streams(self) -> int:
        with self._lock:
            return self._total


class Deadlines:
    """Actions due at given times, in a heap (a plain object: time is passed
    in). `arm` returns a token `disarm` takes back; `due(now)` pops the
    actions whose time came, each once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}
        self._seq = itertools.count()

    def arm(self, at: float, action: Callable[[], None]) -> int:
        token = next(self._seq)
        self._actions[token] = action
        heapq.heappush(self._heap, (at, token))
        return token

    def disarm(self, token: int) -> None:
        self._actions.pop(token, None)  # its heap entry is skipped when it comes up

    def due(self, now: float) -> list[Callable[[], None]]:
        out = []
        while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._actions):
            _, token = heapq.heappop(self._heap)
            action = self._actions.pop(token, None)
            if action is not None:
                out.append(action)
        return out

    def next_at(self) -> float | None:
        while self._heap and self._heap[0][1] not in self._actions:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._actions)


class DeadlineWatch:
    """`Deadlines` run by one daemon thread (started with the first `arm`):
    the receive stream's bound on its writes (an action cancels the call
    whose frames a client did not read in time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, name: str = "write-deadlines") -> None:
        self.clock = clock
        self.name = name
        self._deadlines = Deadlines()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, at: float, action: Callable[[], None]) -> int:
        with self._cond:
            token = self._deadlines.arm(at, action)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._deadlines.disarm(token)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    at = self._deadlines.next_at()
                    now = self.clock()
                    if at is not None and at <= now:
                        break
                    self._cond.wait(None if at is None else at - now)
                if self._stopped:
                    return
                actions = self._deadlines.due(self.clock())
            for action in actions:
                try:
                    action()
                except Exception:  # one failed action must not stop the others'
                    log.exception("a deadline's action failed")
