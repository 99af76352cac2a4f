"""A per-broker circuit breaker for the producer: plain logic, clock passed in.

- **Closed** (the broker works, or has not failed for long): sends go to it.
  After a failure it is *avoided* for `avoid_s` where another group can take
  the send.
- **Open**: once a broker has been failing for `open_after_s` (the
  producer's `retry_timeout_s`) with no success in between, sends to it fail
  at once, saying why, instead of each retrying for the whole timeout again.
  "Failing" means failures close together: a failure more than
  `open_after_s / 2` after the previous one starts the count again, and a
  circuit with no failure for that long is closed again (one glitch, then a
  quiet spell, is not a dead broker; nor is one nobody has tried lately).
- **Half-open**: every `probe_every_s` one send is let through as the probe
  (`allow` answers `Grant.PROBE`); its success closes the circuit, its
  failure keeps it open. A broker whose probe is due is not avoided, so it is
  tried even while other groups take the traffic. A probe whose outcome is
  never reported (its sender failed in between) is given up after
  `open_after_s`.

Only failures of the broker itself count (no connection, deadline, broken
call, shutting down); an answer such as NOT_MASTER or UNKNOWN_TOPIC means
the broker is up. The same object guards a topic as a whole (a key other
than an address: "topic T").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum, IntEnum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # open, with a probe under way


class Grant(IntEnum):
    REFUSED = 0  # open: fail at once (falsy)
    GO = 1  # closed
    PROBE = 2  # open, and this send is the probe: report its outcome, or `release`


@dataclass(slots=True)
class _Broker:
    failing_since: float | None = None
    last_failure: float = float("-inf")
    last_error: str = ""
    next_probe: float = 0.0
    probe_since: float | None = None  # a probe under way since


class CircuitBreaker:
    def __init__(self, open_after_s: float, probe_every_s: float = 1.0, avoid_s: float = 5.0) -> None:
        self.open_after_s = open_after_s
        self.probe_every_s = probe_every_s
        self.avoid_s = avoid_s
        self._lock = threading.Lock()
        self._brokers: dict[str, _Broker] = {}

    def _open(self, b: _Broker, now: float) -> bool:
        """Failing for `open_after_s`, and not gone quiet since (no failure for
        half of it: nothing was tried, so nothing is known; try again)."""
        return (
            b.failing_since is not None
            and now - b.failing_since >= self.open_after_s
            and now - b.last_failure <= self.open_after_s / 2
        )

    def _probing(self, b: _Broker, now: float) -> bool:
        return b.probe_since is not None and now - b.probe_since < self.open_after_s

    def state(self, key: str, now: float) -> State:
        with self._lock:
            b = self._brokers.get(key)
            if b is None or not self._open(b, now):
                return State.CLOSED
            return State.HALF_OPEN if self._probing(b, now) else State.OPEN

    def allow(self, key: str, now: float) -> Grant:
        """May a send go to `key` now? Closed: GO. Open: PROBE for one send
        every `probe_every_s`, REFUSED for the others."""
        with self._lock:
            b = self._brokers.get(key)
            if b is None or not self._open(b, now):
                return Grant.GO
            if self._probing(b, now) or now < b.next_probe:
                return Grant.REFUSED
            b.probe_since = now
            return Grant.PROBE

    def avoid(self, key: str, now: float) -> bool:
        """Whether to prefer another group: it failed within `avoid_s`, or it
        is open and its probe is not due."""
        with self._lock:
            b = self._brokers.get(key)
            if b is None:
                return False
            if self._open(b, now):
                return self._probing(b, now) or now < b.next_probe
            return now - b.last_failure < self.avoid_s

    def failed(self, key: str, now: float, error: str) -> None:
        with self._lock:
            b = self._brokers.setdefault(key, _Broker())
            if b.failing_since is None or now - b.last_failure > self.open_after_s / 2:
                b.failing_since = now  # failures far apart: count from this one
            b.last_failure = now
            b.last_error = error
            b.probe_since = None
            b.next_probe = now + self.probe_every_s

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._brokers.pop(key, None)

    def answered(self, key: str) -> None:
        """The broker answered (even with a refusal such as UNKNOWN_TOPIC): it
        is up, so it is not failing; a recent failure still counts for `avoid`."""
        with self._lock:
            b = self._brokers.get(key)
            if b is not None:
                b.failing_since = None
                b.probe_since = None

    def refused(self, key: str, now: float) -> None:
        """It answered but would not take the send (NOT_MASTER): up, yet to be
        avoided for `avoid_s` where another group can take it."""
        with self._lock:
            b = self._brokers.setdefault(key, _Broker())
            b.failing_since = None
            b.probe_since = None
            b.last_failure = now

    def release(self, key: str) -> None:
        """A probe ended with no verdict (its send failed for another reason)."""
        with self._lock:
            b = self._brokers.get(key)
            if b is not None:
                b.probe_since = None

    def why(self, key: str, now: float) -> str:
        """Why sends to `key` fail at once (for the error message)."""
        with self._lock:
            b = self._brokers.get(key)
            if b is None or b.failing_since is None:
                return ""
            return f"{key} has failed for {now - b.failing_since:.0f} s (last: {b.last_error})"
