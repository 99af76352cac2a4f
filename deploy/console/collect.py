"""What the console shows, refreshed by one thread every `refresh_ms`.

Each refresh asks the cluster through an `Admin` (the console's profile,
the nameserver's own client port) and keeps one snapshot; `/api`
requests read it, so any number of viewers cost the brokers one
refresh. Parts:

- `cluster`: broker groups from the nameserver's registry (in process),
  each broker's Status (role, epoch, in-sync set, replica lag), and the
  failover controller's view when this nameserver runs one;
- `groups`: consumer groups with lag per queue and who serves each queue
  (consumer/admin_ops.describe_groups: what `tailrace group describe
  --json` prints). DescribeGroups reads ConsumeQueue entries, so it is
  asked only while someone looks (an `/api` request in the last
  `VIEW_WINDOW_MS`);
- `rates`: per topic, messages stored per second (the topic's summed max
  offsets over time, `GetQueueOffsets` on each group's master; at most
  `max_topics_sampled` user topics, the busiest, `history.TopicPicker`,
  the rest listed in `not_sampled`), and per group its total lag, bounded
  (deploy/console/history.py).

A failed part keeps its last value and says why (`errors`); nothing here
raises into the serving thread.

**Deadline (review R5).** One stalled broker (a GC or I/O stall, a
SIGSTOP: it accepts connections and never answers) must not freeze the
console. A refresh asks brokers in parallel on a bounded pool
(`console.parallel` threads), each call's timeout cut to what is left of
the refresh's deadline (`console.deadline_ms`); a broker that has not
answered by then is marked `late` (its row's `error`) and the refresh
goes on without it. A topic whose offsets a master did not give is not
sampled that refresh (a partial sum would chart a dip and a spike).
Describing groups runs as one task on the pool: when it is late its last
answer stays, and the next refresh waits for that same task rather than
start another behind it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from consumer.admin import Admin
from consumer.admin_ops import describe_groups
from core.errors import RequestTimeoutError, TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MASTER_ID, GroupRoute
from deploy.console.config import ConsoleSection
from deploy.console.history import Levels, Rates, TopicPicker

log = logging.getLogger("tailrace.console")
VIEW_WINDOW_MS = 60_000  # groups are described while someone looked this recently
STATUS_TIMEOUT_S = 2.0

T = TypeVar("T")
LATE = "late: no answer within the console's refresh deadline (console.deadline_ms)"


class _Late(TailraceError):
    """A call whose turn on the pool came after the refresh's deadline."""


Clusters = Callable[[], dict[str, list[GroupRoute]]]  # the registry's view, now
ControllerView = Callable[[], dict[str, Any] | None]  # the controller's groups (None: not running one)


def wall_ms() -> int:
    """Chart points carry wall-clock times (a browser draws them)."""
    return time.time_ns() // 1_000_000


def group_state(brokers: list[dict[str, Any]]) -> str:
    """A broker group's card state: `unreachable` (no live broker
    registered, or none answered), `no_master`, `degraded` (a broker did not
    answer), else `ok`."""
    answered = [b for b in brokers if "error" not in b]
    if not answered:
        return "unreachable"
    if not any(b["broker_id"] == MASTER_ID for b in answered):
        return "no_master"
    return "ok" if len(answered) == len(brokers) else "degraded"


class ConsoleData:
    def __init__(
        self,
        cfg: ConsoleSection,
        admin: Admin,
        clusters: Clusters,
        controller: ControllerView = lambda: None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.cfg = cfg
        self.admin = admin
        self.clusters = clusters
        self.controller = controller
        self.clock_ms = clock_ms
        self.rates = Rates(cfg.history_points, cfg.max_series)
        self.lag = Levels(cfg.history_points, cfg.max_series)
        self.picker = TopicPicker(cfg.max_topics_sampled)
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {"cluster": {}, "groups": {}, "updated_ms": 0, "errors": {}}
        self._viewed_ms = -VIEW_WINDOW_MS
        self._groups_ms = 0
        self._wake = threading.Event()
        self._refreshed = threading.Condition(self._lock)
        self._started_ms = -1  # when the last complete refresh started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._pool = ThreadPoolExecutor(cfg.parallel, thread_name_prefix="console-ask")
        self._describing: Future[dict[str, Any]] | None = None  # a describe still running

    # ---- what /api serves -------------------------------------------------------

    def view(self, part: str, max_age_ms: int | None = None) -> dict[str, Any]:
        """The snapshot's `part` ("cluster", "groups", "rates" or "state":
        all). Asking for groups marks them viewed; when they are older than
        `max_age_ms` (default: two refreshes), wait for the next refresh
        (at most 10 s)."""
        now = self.clock_ms()
        if part in ("groups", "state"):
            self._viewed_ms = now
            limit = max_age_ms if max_age_ms is not None else 2 * self.cfg.refresh_ms + 1000
            if now - self._groups_ms > limit:
                self._wake.set()
                with self._refreshed:  # a refresh that started after this request
                    self._refreshed.wait_for(lambda: self._started_ms >= now, 10.0)
        with self._lock:
            snap = dict(self._snapshot)
        left_out = self.picker.left_out
        rates = self.rates.to_json() | {
            "not_sampled": left_out[: self.cfg.max_series],
            "not_sampled_count": len(left_out),
        }
        charts = {"rates": rates, "lag": self.lag.to_json(), "refresh_ms": self.cfg.refresh_ms}
        whole = {**snap, "charts": charts}
        if part == "state":
            return whole
        if part == "rates":
            return {"updated_ms": snap["updated_ms"], **charts}
        return {"updated_ms": snap["updated_ms"], part: snap[part], "errors": snap["errors"]}

    # ---- the refresh thread ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- asking brokers in parallel, under the refresh's deadline ----------------

    def _deadline(self) -> float:
        return time.monotonic() + self.cfg.deadline_ms / 1000

    def _ask_all(
        self, calls: Mapping[Any, Callable[[float], T]], deadline: float
    ) -> tuple[dict[Any, T], dict[Any, str]]:
        """Run each `calls[key](timeout_s)` on the pool, the timeout what is
        left of `deadline`: (answers, key -> why not: its error, or `LATE`)."""
        futures = {k: self._pool.submit(self._timed, c, deadline) for k, c in calls.items()}
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        answers: dict[Any, T] = {}
        failed: dict[Any, str] = {}
        for key, fut in futures.items():
            if not fut.done():
                fut.cancel()  # not started: never asked; started: ends by its own timeout
                failed[key] = LATE
            elif isinstance(exc := fut.exception(), TailraceError):
                # a call whose timeout was what was left of the deadline, and ran out: late too
                out_of_time = isinstance(exc, RequestTimeoutError) and time.monotonic() >= deadline - 0.05
                failed[key] = LATE if isinstance(exc, _Late) or out_of_time else str(exc)[:300]
            elif exc is not None:
                raise exc
            else:
                answers[key] = fut.result()
        return answers, failed

    @staticmethod
    def _timed(call: Callable[[float], T], deadline: float) -> T:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Late(LATE)
        return call(left)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug here must not end the console; say it and go on
                log.exception("console refresh failed")
            self._wake.wait(self.cfg.refresh_ms / 1000)
            self._wake.clear()

    def refresh(self) -> None:
        """One refresh of every part (groups only while viewed)."""
        now = self.clock_ms()
        deadline = self._deadline()
        errors: dict[str, str] = {}
        viewed = now - self._viewed_ms <= VIEW_WINDOW_MS
        if viewed and self._describing is None:  # started first, waited for last: it overlaps the rest
            self._describing = self._pool.submit(describe_groups, self.admin)
        # Status gets half of the deadline, so a stalled broker leaves the rates their time
        cluster = self._cluster(errors, (time.monotonic() + deadline) / 2)
        self._sample(now, cluster, errors, deadline)
        groups = self._groups(errors, deadline) if viewed else None
        if groups is not None:
            self.lag.add(now, {g["group"]: g["lag"] for g in groups.get("groups", [])})
        with self._refreshed:
            self._snapshot["cluster"] = cluster
            if groups is not None:
                self._snapshot["groups"] = groups
                self._groups_ms = now
            self._snapshot["updated_ms"] = now
            self._snapshot["errors"] = errors
            self._started_ms = now
            self._refreshed.notify_all()

    def _groups(self, errors: dict[str, str], deadline: float) -> dict[str, Any] | None:
        """Every group described (None: failed or late, errors say which); one
        describe at a time: a late one is waited for by the next refresh."""
        fut = self._describing
        if fut is None:
            fut = self._describing = self._pool.submit(describe_groups, self.admin)
        wait([fut], timeout=max(0.0, deadline - time.monotonic()))
        if not fut.done():
            errors["groups"] = f"{LATE}; still describing: the groups shown are the last answer"
            return None
        self._describing = None
        try:
            return fut.result()
        except TailraceError as exc:
            errors["groups"] = str(exc)[:500]
            return None

    def _status(self, address: str, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        conn = self.admin.pool.get(address)
        r = conn.call(conn.stub.Status, pb.StatusRequest(), timeout_s=min(timeout_s, STATUS_TIMEOUT_S))
        details: dict[str, Any] = json.loads(r.details_json or "{}")
        return {"role": r.role, "max_offset": r.max_offset, "details": details}

    def _cluster(self, errors: dict[str, str], deadline: float | None = None) -> dict[str, Any]:
        """Broker groups with their brokers (role, epoch, alive, in sync,
        replica lag), the master's in-sync set, and the controller's view;
        every broker's Status asked at once."""
        ctl = self.controller() or {}
        out: dict[str, Any] = {"clusters": [], "controller": bool(ctl)}
        clusters = self.clusters()
        addresses = {b.address for gs in clusters.values() for g in gs for b in g.brokers}
        calls = {a: (lambda t, a=a: self._status(a, t)) for a in addresses}
        answers, failed = self._ask_all(calls, deadline or self._deadline())
        for name, groups in clusters.items():
            rows = []
            for g in groups:
                rows.append(self._group(g, ctl.get(g.broker_name), errors, answers, failed))
            out["clusters"].append({"name": name, "groups": rows})
        return out

    def _group(
        self,
        g: GroupRoute,
        ctl: dict[str, Any] | None,
        errors: dict[str, str],
        answers: Mapping[str, dict[str, Any]],
        failed: Mapping[str, str],
    ) -> dict[str, Any]:
        brokers = []
        in_sync: list[int] | None = None
        slave_lag: dict[int, int] = {}
        for b in g.brokers:
            row: dict[str, Any] = {
                "broker_id": b.broker_id,
                "address": b.address,
                "role": b.role,
                "epoch": b.epoch,
                "alive": b.alive,
                "max_offset": b.max_offset,
            }
            st = answers.get(b.address)
            if st is None:
                row["error"] = errors[b.address] = failed.get(b.address, "no answer")
                row["late"] = row["error"] == LATE
            else:
                rep = st["details"].get("replication", {})
                row.update(role=st["role"], max_offset=st["max_offset"])
                row["epoch"] = st["details"].get("failover", {}).get("epoch", b.epoch)
                if b.broker_id == MASTER_ID:
                    in_sync = list(rep.get("in_sync", []))
                    slave_lag = {s["broker_id"]: s["lag_bytes"] for s in rep.get("slaves", [])}
            brokers.append(row)
        for row in brokers:
            if row["broker_id"] != MASTER_ID:
                row["in_sync"] = in_sync is not None and row["broker_id"] in in_sync
                row["lag_bytes"] = slave_lag.get(row["broker_id"])
        masters = [b for b in brokers if b["broker_id"] == MASTER_ID]
        return {
            "broker_name": g.broker_name,
            "state": group_state(brokers),
            "master": masters[0]["address"] if masters else None,
            "epoch": max((b["epoch"] for b in brokers), default=0),
            "in_sync": in_sync,
            "brokers": brokers,
            "controller": ctl,
        }

    def _offsets(self, address: str, topic: str, timeout_s: float) -> int:
        conn = self.admin.pool.get(address)
        r = conn.call(conn.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic), timeout_s=timeout_s)
        return sum(q.max_offset for q in r.queues)

    def _sample(
        self,
        now: int,
        cluster: dict[str, Any],
        errors: dict[str, str],
        deadline: float | None = None,
    ) -> None:
        """A point for the rates chart: per topic its stored-message count
        (rates follow; the lag chart's points come with each describe)."""
        deadline = deadline or self._deadline()
        masters = [
            g["master"] for c in cluster.get("clusters", []) for g in c["groups"] if g["master"] is not None
        ]
        topics: list[str] = []
        if masters:
            listed, failed = self._ask_all({"": lambda t: list(self.admin.list_topics())}, deadline)
            if failed:
                errors["topics"] = failed[""]
            topics = self.picker.pick(listed.get("", []))
        calls = {
            (topic, a): (lambda t, a=a, topic=topic: self._offsets(a, topic, t))
            for topic in topics
            for a in masters
        }
        counts, failed = self._ask_all(calls, deadline)
        late = {topic for (topic, _a), why in failed.items() if why == LATE}
        if late:
            errors["rates"] = f"{LATE}: {len(late)} topic(s) not sampled this refresh"
        stored: dict[str, float] = {}
        for topic in topics:
            if topic not in late:  # a partial sum would chart a dip, then a spike
                stored[topic] = sum(n for (t, _a), n in counts.items() if t == topic)
        self.picker.sampled(now, stored)
        self.rates.add(now, stored)
