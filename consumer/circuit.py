"""A per-broker circuit breaker for the producer: plain logic, clock passed in.

- **Closed** (the broker works, or has not failed for long): sends go to it.
  After a failure it is *avoided* for `avoid_s` where another group can take
  the send.
- **Open**: once a broker has failed for `open_after_s` (the producer's
  `retry_timeout_s`) with no success in between, sends to it fail at once,
  saying why, instead of each retrying for the whole timeout again.
- **Half-open**: every `probe_every_s` one send is let through as a probe;
  its success closes the circuit, its failure keeps it open.

Only failures of the broker itself count (no connection, deadline, broken
call, shutting down); an answer such as NOT_MASTER or UNKNOWN_TOPIC means
the broker is up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # open, with a probe under way


@dataclass(slots=True)
class _Broker:
    failing_since: float | None = None
    last_failure: float = float("-inf")
    last_error: str = ""
    next_probe: float = 0.0
    probing: bool = False


class CircuitBreaker:
    def __init__(self, open_after_s: float, probe_every_s: float = 1.0, avoid_s: float = 5.0) -> None:
        self.open_after_s = open_after_s
        self.probe_every_s = probe_every_s
        self.avoid_s = avoid_s
        self._lock = threading.Lock()
        self._brokers: dict[str, _Broker] = {}

    def _open(self, b: _Broker, now: float) -> bool:
        return b.failing_since is not None and now - b.failing_since >= self.open_after_s

    def state(self, address: str, now: float) -> State:
        with self._lock:
            b = self._brokers.get(address)
            if b is None or not self._open(b, now):
                return State.CLOSED
            return State.HALF_OPEN if b.probing else State.OPEN

    def allow(self, address: str, now: float) -> bool:
        """May a send go to `address` now? Closed: yes. Open: only as the probe
        (one at a time, every `probe_every_s`); the caller then reports its
        outcome with `succeeded` or `failed`."""
        with self._lock:
            b = self._brokers.get(address)
            if b is None or not self._open(b, now):
                return True
            if b.probing or now < b.next_probe:
                return False
            b.probing = True
            return True

    def avoid(self, address: str, now: float) -> bool:
        """Whether to prefer another group: it failed within `avoid_s`, or is open."""
        with self._lock:
            b = self._brokers.get(address)
            return b is not None and (now - b.last_failure < self.avoid_s or self._open(b, now))

    def failed(self, address: str, now: float, error: str) -> None:
        with self._lock:
            b = self._brokers.setdefault(address, _Broker())
            if b.failing_since is None:
                b.failing_since = now
            b.last_failure = now
            b.last_error = error
            if b.probing or self._open(b, now):
                b.probing = False
                b.next_probe = now + self.probe_every_s

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._brokers.pop(address, None)

    def answered(self, address: str) -> None:
        """The broker answered (even with a refusal such as NOT_MASTER): it is
        up, so it is not failing; a recent refusal still counts for `avoid`."""
        with self._lock:
            b = self._brokers.get(address)
            if b is not None:
                b.failing_since = None
                b.probing = False

    def refused(self, address: str, now: float) -> None:
        """It answered but would not take the send (NOT_MASTER): up, yet to be
        avoided for `avoid_s` where another group can take it."""
        with self._lock:
            b = self._brokers.setdefault(address, _Broker())
            b.failing_since = None
            b.probing = False
            b.last_failure = now

    def why(self, address: str, now: float) -> str:
        """Why sends to `address` fail at once (for the error message)."""
        with self._lock:
            b = self._brokers.get(address)
            if b is None or b.failing_since is None:
                return ""
            return f"{address} has failed for {now - b.failing_since:.0f} s (last: {b.last_error})"
