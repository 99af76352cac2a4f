"""Which failover controller a broker heartbeats, decided from the answers it
got: no sockets, no clock (the link in core/broker/controller_link.py does
the calls and keeps the time).

Several nameservers run the controller; one leads, the others stand by and
answer `NOT_CONTROLLER`, naming the leader when they know it. The broker
follows the one it believes leads (at first, the first configured). One
heartbeat ("beat") tries the controllers one after another until one
answers, each at most once:

- first the believed leader;
- after `NOT_CONTROLLER` naming a configured controller not tried yet in
  this beat: that one, at once. A hint to an address that is not configured
  is ignored (noted, for the log): the broker talks only to the controllers
  it was given (their certificates are the ones it expects), however a
  standby spells the leader;
- after any other failure (`NOT_CONTROLLER` naming no one, unavailable,
  deadline, anything else): the next configured controller not tried yet,
  in list order after the one that failed, wrapping around.

The one that answers is the leader from then on (a switch, with the reasons
the others were left, is reported once). A beat in which none answered keeps
the believed leader.

The beat's time budget is shared: an attempt at a likely leader (the
believed one, or one a standby named) gets half of what is left (all of it
when it is the last to try), a blind try an equal share with the others
left, so a controller that takes connections but never answers (SIGSTOP)
costs a share of the beat, not all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class Switch:
    """The broker follows another controller from now on."""

    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """The controller to try next in this beat ("": the beat is over, none
    left), whether it is a likely leader, and a hint that was ignored."""

    address: str
    likely: bool = False
    ignored_hint: str = ""


class ControllerChoice:
    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise InvalidArgumentError("at least one controller address is needed")
        if len(set(addresses)) != len(addresses):
            raise InvalidArgumentError(f"a controller is listed twice: {list(addresses)}")
        self.addresses = tuple(addresses)
        self.leader = self.addresses[0]
        self._tried: list[str] = []
        self._why: list[str] = []  # why each controller tried in this beat was left

    def begin(self) -> Attempt:
        """A new beat: try the believed leader first."""
        self._tried = [self.leader]
        self._why = []
        return Attempt(self.leader, likely=True)

    def share(self, attempt: Attempt, left_s: float) -> float:
        """The time the attempt may take out of `left_s` left in the beat."""
        others = len(self.addresses) - len(self._tried)  # still to try after this one
        if attempt.likely:
            return left_s if others == 0 else left_s / 2
        return left_s / (others + 1)

    def refused(self, address: str, leader_hint: str) -> Attempt:
        """`address` answered NOT_CONTROLLER naming `leader_hint` ("": no one)."""
        if leader_hint and leader_hint in self.addresses and leader_hint != address:
            why = f"{address} answered NOT_CONTROLLER naming {leader_hint}"
            if leader_hint not in self._tried:
                self._why.append(why)
                return self._try(leader_hint, likely=True)
            self._why.append(why + " (already tried)")
            return self._next(address)
        if leader_hint and leader_hint not in self.addresses:
            self._why.append(f"{address} answered NOT_CONTROLLER naming {leader_hint}, not a configured one")
            return self._next(address, ignored_hint=leader_hint)
        self._why.append(f"{address} answered NOT_CONTROLLER naming no leader")
        return self._next(address)

    def failed(self, address: str, why: str) -> Attempt:
        """`address` could not be asked or failed otherwise (unavailable, deadline, ...)."""
        self._why.append(f"{address}: {why}")
        return self._next(address)

    def answered(self, address: str) -> Switch | None:
        """`address` answered the heartbeat: it leads. A Switch when it is
        not the one followed until now."""
        if address == self.leader:
            return None
        switch = Switch(self.leader, address, "; ".join(self._why) or "it answered")
        self.leader = address
        return switch

    @property
    def why(self) -> str:
        """Why the controllers tried in this beat were left (for `last_error`)."""
        return "; ".join(self._why)

    def _try(self, address: str, likely: bool = False, ignored_hint: str = "") -> Attempt:
        self._tried.append(address)
        return Attempt(address, likely, ignored_hint)

    def _next(self, after: str, ignored_hint: str = "") -> Attempt:
        n = len(self.addresses)
        start = self.addresses.index(after) if after in self.addresses else -1
        for i in range(1, n + 1):
            candidate = self.addresses[(start + i) % n]
            if candidate not in self._tried:
                return self._try(candidate, ignored_hint=ignored_hint)
        return Attempt("", ignored_hint=ignored_hint)
