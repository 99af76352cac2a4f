"""Waiting on a running cluster: one poll-until helper and the waits built on it.

Tests, benchmarks, the demo and the drills all wait the same way: poll a
condition until a deadline (never a bare sleep standing in for a wait) and,
at the deadline, raise `WaitTimeout` naming what was waited for.

- `poll_until(cond, timeout_s, what)`: the one polling loop;
- `route_of`, `master_groups`, `wait_routed`: a topic's route in the nameservers;
- `broker_status`, `max_offset`, `wait_max_offset`, `wait_caught_up`,
  `wait_warm`: a broker's Status, and waits on its CommitLog.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from consumer.admin import Admin
from consumer.profile import Profile
from consumer.routing import NameserverRoutes
from core.errors import TailraceError
from core.route import TopicRoute

if TYPE_CHECKING:
    from deploy.harness import TailraceProcess

Broker: TypeAlias = "TailraceProcess | str"  # a harness process, or a broker address
ProfileArg: TypeAlias = (
    "str | Path | Profile | None"  # a client profile; None: $TAILRACE_PROFILE, else plaintext
)


class WaitTimeout(TailraceError, AssertionError):
    """A condition did not hold before its deadline.

    A `TailraceError`, so the `tailrace` commands (drills, benchmarks) report
    it as one error line, and an `AssertionError`, so a test reports it as a
    failed expectation."""

    code = "WAIT_TIMEOUT"


class ConditionBroke(TailraceError, AssertionError):
    """A condition that had to hold for a while stopped holding."""

    code = "CONDITION_BROKE"


def poll_until(cond: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.01) -> float:
    """Call `cond` every `every_s` seconds until it returns something truthy;
    return the seconds that took. Raises `WaitTimeout` naming `what` once
    `timeout_s` has passed (an exception from `cond` propagates)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - t0


def holds_for(cond: Callable[[], object], duration_s: float, what: str, every_s: float = 0.05) -> None:
    """Check `cond` every `every_s` seconds for `duration_s` seconds; raise
    `ConditionBroke` naming `what` the first time it is falsy. For tests that
    need time to pass (expiry windows, idle periods) and prove something held
    all along, where a sleep would check it only at the end."""
    start = time.monotonic()
    end = start + duration_s
    while True:
        if not cond():
            raise ConditionBroke(f"{what}: no longer true after {time.monotonic() - start:.2f} s")
        if time.monotonic() >= end:
            return
        time.sleep(every_s)


def _addresses(namesrv: Sequence[str] | str) -> list[str]:
    return [a for a in namesrv.split(",") if a] if isinstance(namesrv, str) else list(namesrv)


def _sorted(groups: int | Sequence[str]) -> int | list[str]:
    return groups if isinstance(groups, int) else sorted(groups)


def _fetch(routes: NameserverRoutes, topic: str) -> TopicRoute | None:
    try:
        return routes.get(topic, refresh=True)
    except TailraceError:  # no route yet, or no nameserver answered
        return None


def route_of(namesrv: Sequence[str] | str, topic: str, profile: ProfileArg = None) -> TopicRoute | None:
    """The nameservers' route of `topic` as of now; None when they have none
    (or none of them answers)."""
    routes = NameserverRoutes(_addresses(namesrv), security=Profile.resolve(profile).security())
    try:
        return _fetch(routes, topic)
    finally:
        routes.close()


def master_groups(route: TopicRoute | None) -> list[str]:
    """The names of the route's groups that have a live master, sorted."""
    return sorted(g.broker_name for g in route.groups if g.master) if route is not None else []


def wait_routed(
    namesrv: Sequence[str] | str,
    topic: str,
    *,
    groups: int | Sequence[str] | None = None,
    brokers: Iterable[int] | None = None,
    check: Callable[[TopicRoute], bool] | None = None,
    timeout_s: float = 30.0,
    what: str | None = None,
    profile: ProfileArg = None,
) -> float:
    """Wait until the nameservers route `topic` to a writable queue (what a
    producer needs), and, when given: to exactly these `groups` with a live
    master (their names, or how many), with exactly the broker ids `brokers`
    in every group, and such that `check(route)` holds. Returns the seconds
    it took."""
    want_ids = None if brokers is None else sorted(brokers)

    def ready(route: TopicRoute | None) -> bool:
        if route is None or not route.write_queues():
            return False
        live = master_groups(route)
        if groups is not None and (len(live) if isinstance(groups, int) else live) != _sorted(groups):
            return False
        ids = [sorted(b.broker_id for b in g.brokers) for g in route.groups]
        if want_ids is not None and any(i != want_ids for i in ids):
            return False
        return check is None or check(route)

    if what is None:
        what = f"topic {topic!r} routed"
        what += f" to groups {_sorted(groups)}" if groups is not None else ""
        what += f" with brokers {want_ids} in each" if want_ids is not None else ""
    routes = NameserverRoutes(_addresses(namesrv), security=Profile.resolve(profile).security())
    try:
        return poll_until(lambda: ready(_fetch(routes, topic)), timeout_s, what, every_s=0.05)
    finally:
        routes.close()


def _address(broker: Broker) -> str:
    return broker if isinstance(broker, str) else broker.address


def _name(broker: Broker) -> str:
    return broker if isinstance(broker, str) else broker.name


def _profile(broker: Broker) -> ProfileArg:
    """A harness process's client profile (secure groups), else None."""
    return None if isinstance(broker, str) else broker.profile


def broker_status(broker: Broker, profile: ProfileArg = None) -> dict[str, Any]:
    """The broker's Status (`Admin.status()`)."""
    with Admin(_address(broker), profile=profile or _profile(broker)) as admin:
        return admin.status()


def max_offset(broker: Broker) -> int:
    """The end of the broker's CommitLog."""
    return int(broker_status(broker)["max_offset"])


def wait_max_offset(
    brokers: Iterable[Broker], offset: int, timeout_s: float = 30.0, what: str | None = None
) -> float:
    """Wait until every one of `brokers` holds its CommitLog up to `offset`."""
    targets = list(brokers)
    what = what or f"{', '.join(map(_name, targets))} at offset {offset}"
    return poll_until(lambda: all(max_offset(b) >= offset for b in targets), timeout_s, what, every_s=0.05)


def wait_caught_up(master: Broker, slaves: Iterable[Broker], timeout_s: float = 30.0) -> float:
    """Wait until every slave holds the master's CommitLog as it ends now."""
    targets = list(slaves)
    end = max_offset(master)
    what = f"{', '.join(map(_name, targets))} caught up with {_name(master)} at {end}"
    return wait_max_offset(targets, end, timeout_s, what)


def wait_warm(*brokers: Broker, timeout_s: float = 60.0) -> float:
    """Wait until every broker has finished pre-faulting its first segments
    (start-up work that benchmarks and CPU measurements must not count)."""
    return poll_until(
        lambda: not any(broker_status(b)["details"]["segments_warming"] for b in brokers),
        timeout_s,
        f"{', '.join(map(_name, brokers))} to finish warming segments",
        every_s=0.05,
    )
