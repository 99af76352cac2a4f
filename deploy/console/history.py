"""Bounded time series for the console's charts: plain logic, the clock passed in.

`Rates` turns counters sampled now and then (a topic's summed max offsets:
messages stored so far) into per-second rates; `Levels` keeps values as
they are (a group's lag). Each keeps at most `points` points per series
and at most `max_series` series: a series not sampled for `points`
samples in a row is forgotten at the next one (a deleted topic), and a new series past
the cap is not started (counted in `refused`). Memory is bounded by
points x max_series whatever the cluster holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

Point = tuple[int, float]  # (epoch ms, value)


class Levels:
    def __init__(self, points: int, max_series: int) -> None:
        self.points = points
        self.max_series = max_series
        self._series: dict[str, deque[Point]] = {}
        self._last_seen: dict[str, int] = {}  # series -> sample number it was last given
        self._samples = 0
        self.refused: set[str] = set()  # names not charted (past max_series), bounded like the series

    def add(self, now_ms: int, values: Mapping[str, float]) -> None:
        """One sample: a point for each series given."""
        self._samples += 1
        for name in [n for n, at in self._last_seen.items() if self._samples - at > self.points]:
            del self._series[name], self._last_seen[name]
            self.forget(name)
        for name, value in values.items():
            series = self._series.get(name)
            if series is None:
                if len(self._series) >= self.max_series:
                    if len(self.refused) < self.max_series:
                        self.refused.add(name)
                    continue
                series = self._series[name] = deque(maxlen=self.points)
            series.append((now_ms, float(value)))
            self._last_seen[name] = self._samples

    def forget(self, name: str) -> None:
        """A series is gone (hook for subclasses)."""

    def series(self) -> dict[str, list[Point]]:
        return {name: list(points) for name, points in sorted(self._series.items())}

    def to_json(self) -> dict[str, object]:
        return {
            "series": {name: [[t, round(v, 3)] for t, v in pts] for name, pts in self.series().items()},
            "not_charted": sorted(self.refused),
        }


class Rates(Levels):
    """Counters in, per-second rates out: the first sample of a series only
    remembers it; a counter that went down (a failover to a slave that had
    not yet replicated the end, a deleted and re-created topic) restarts it."""

    def __init__(self, points: int, max_series: int) -> None:
        super().__init__(points, max_series)
        self._last: dict[str, Point] = {}

    def add(self, now_ms: int, values: Mapping[str, float]) -> None:
        rates: dict[str, float] = {}
        for name, value in values.items():
            prev = self._last.get(name)
            if prev is None and len(self._last) >= self.max_series:
                if len(self.refused) < self.max_series:
                    self.refused.add(name)
                continue
            self._last[name] = (now_ms, float(value))
            if prev is not None and now_ms > prev[0] and value >= prev[1]:
                rates[name] = (value - prev[1]) * 1000.0 / (now_ms - prev[0])
        super().add(now_ms, rates)
        for name in [n for n in self._last if n not in values]:
            del self._last[name]  # not sampled now: its next sample starts it again

    def forget(self, name: str) -> None:
        self._last.pop(name, None)


class TopicPicker:
    """Which topics' offsets to sample each refresh, at most `cap`: the
    broker's own `%` topics never (retries, DLQs, timer: not an operator's
    rate, and `%` sorts before every letter, so a cut by name gave them
    every slot); then the busiest (by the last rate measured for each),
    with a quarter of the slots (at least one) turning through the rest,
    least recently sampled first, so a topic that gets busy is found.
    Plain logic: counts and times are passed in."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._count: dict[str, Point] = {}  # topic -> (ms, messages stored) when last sampled
        self._rate: dict[str, float] = {}  # topic -> messages/s between its last two samples
        self._turn = 0  # samples taken: the rotation's clock
        self._sampled_at: dict[str, int] = {}  # topic -> the sample it was last in
        self.left_out: list[str] = []  # user topics not sampled last time

    def pick(self, topics: list[str]) -> list[str]:
        users = sorted(t for t in topics if not t.startswith("%"))
        for gone in [t for t in self._count if t not in set(users)]:
            self._count.pop(gone), self._rate.pop(gone, None), self._sampled_at.pop(gone, None)
        if len(users) <= self.cap:
            self.left_out = []
            return users
        rotating = max(1, self.cap // 4) if self.cap else 0
        by_rate = sorted(users, key=lambda t: -self._rate.get(t, -1.0))
        busiest = [t for t in by_rate[: self.cap - rotating] if self._rate.get(t, 0.0) > 0]
        rest = sorted((t for t in users if t not in set(busiest)), key=lambda t: self._sampled_at.get(t, -1))
        chosen = busiest + rest[: self.cap - len(busiest)]
        self.left_out = sorted(set(users) - set(chosen))
        return chosen

    def sampled(self, now_ms: int, counts: Mapping[str, float]) -> None:
        """The counts read for the topics picked."""
        self._turn += 1
        for topic, n in counts.items():
            prev = self._count.get(topic)
            if prev is not None and now_ms > prev[0] and n >= prev[1]:
                self._rate[topic] = (n - prev[1]) * 1000.0 / (now_ms - prev[0])
            self._count[topic] = (now_ms, float(n))
            self._sampled_at[topic] = self._turn
