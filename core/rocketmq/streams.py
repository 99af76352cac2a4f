"""How many Telemetry streams the proxy holds open at once.

Each open stream holds one server thread for as long as the client lives
(the sync gRPC server has no other way to wait on a client's next
command), so without a cap a few dozen clients would take every thread and
starve SendMessage and QueryRoute. The gate admits a stream while fewer
than `max_streams` are open in all and fewer than `max_per_account` for
its caller's account (anonymous callers share one); the rest are answered
`TOO_MANY_REQUESTS` at once and closed.
"""

from __future__ import annotations

import threading
from collections import Counter


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
