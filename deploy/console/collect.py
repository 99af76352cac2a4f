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
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from consumer.admin import Admin
from consumer.admin_ops import describe_groups
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MASTER_ID, GroupRoute
from deploy.console.config import ConsoleSection
from deploy.console.history import Levels, Rates, TopicPicker

log = logging.getLogger("tailrace.console")
VIEW_WINDOW_MS = 60_000  # groups are described while someone looked this recently
STATUS_TIMEOUT_S = 2.0

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
        self._thread.join(timeout=10)

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
        errors: dict[str, str] = {}
        cluster = self._cluster(errors)
        groups = None
        if now - self._viewed_ms <= VIEW_WINDOW_MS:
            try:
                groups = describe_groups(self.admin)
            except TailraceError as exc:
                errors["groups"] = str(exc)[:500]
        self._sample(now, cluster, groups, errors)
        with self._refreshed:
            self._snapshot["cluster"] = cluster
            if groups is not None:
                self._snapshot["groups"] = groups
                self._groups_ms = now
            self._snapshot["updated_ms"] = now
            self._snapshot["errors"] = errors
            self._started_ms = now
            self._refreshed.notify_all()

    def _status(self, address: str) -> dict[str, Any]:
        conn = self.admin.pool.get(address)
        r = conn.call(conn.stub.Status, pb.StatusRequest(), timeout_s=STATUS_TIMEOUT_S)
        details: dict[str, Any] = json.loads(r.details_json or "{}")
        return {"role": r.role, "max_offset": r.max_offset, "details": details}

    def _cluster(self, errors: dict[str, str]) -> dict[str, Any]:
        """Broker groups with their brokers (role, epoch, alive, in sync,
        replica lag), the master's in-sync set, and the controller's view."""
        ctl = self.controller() or {}
        out: dict[str, Any] = {"clusters": [], "controller": bool(ctl)}
        for name, groups in self.clusters().items():
            rows = []
            for g in groups:
                rows.append(self._group(g, ctl.get(g.broker_name), errors))
            out["clusters"].append({"name": name, "groups": rows})
        return out

    def _group(self, g: GroupRoute, ctl: dict[str, Any] | None, errors: dict[str, str]) -> dict[str, Any]:
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
            try:
                st = self._status(b.address)
            except TailraceError as exc:
                row["error"] = errors[b.address] = str(exc)[:300]
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

    def _sample(
        self, now: int, cluster: dict[str, Any], groups: dict[str, Any] | None, errors: dict[str, str]
    ) -> None:
        """A point for each chart: per topic its stored-message count (rates
        follow), per group its total lag (when groups were described)."""
        stored: dict[str, float] = {}
        masters = [
            g["master"] for c in cluster.get("clusters", []) for g in c["groups"] if g["master"] is not None
        ]
        try:
            topics = self.picker.pick(list(self.admin.list_topics())) if masters else []
        except TailraceError as exc:
            errors["topics"] = str(exc)[:300]
            topics = []
        for topic in topics:
            total = 0
            for address in masters:
                conn = self.admin.pool.get(address)
                try:
                    r = conn.call(conn.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic))
                except TailraceError:
                    continue  # the topic is not on that group
                total += sum(q.max_offset for q in r.queues)
            stored[topic] = total
        self.picker.sampled(now, stored)
        self.rates.add(now, stored)
        if groups is not None:
            self.lag.add(now, {g["group"]: g["lag"] for g in groups.get("groups", [])})
