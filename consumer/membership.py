"""A consumer's group membership: heartbeats on a background thread.

Every `heartbeat_ms` the member heartbeats, in parallel and with a short
deadline, to the master of every group that hosts its topic. The group's
view of its members comes from one designated broker group, the first by
name, so every member reads the same list. If that broker does not answer,
the last view is kept; once it has not answered for three heartbeat
intervals the broker has dropped this member, so the member drops itself from
its view too (and so gives up its queues) rather than keep reading queues
that others have taken over. When the view changes, `changed` is set and the
consumer rebalances on its next poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import grpc

from consumer.connection import ConnectionPool
from consumer.routing import Routes
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)
MISSED_HEARTBEATS = 3


class Membership:
    def __init__(
        self,
        pool: ConnectionPool,
        routes: Routes,
        group: str,
        topic: str,
        client_id: str,
        heartbeat_ms: int,
    ) -> None:
        self.pool = pool
        self.routes = routes
        self.group = group
        self.topic = topic
        self.client_id = client_id
        self.heartbeat_ms = heartbeat_ms
        self.members: list[str] = []
        self.changed = threading.Event()
        self._last_ok = time.monotonic()
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)

    def _masters(self) -> list[str]:
        try:
            route = self.routes.get(self.topic)
        except TailraceError as exc:
            log.warning("no route for %s: %s", self.topic, exc)
            return []
        out = []
        for g in sorted(route.groups, key=lambda g: g.broker_name):
            m = g.master
            if m is not None:
                out.append(m.address)
        return out

    def beat(self) -> None:
        req = pb.HeartbeatRequest(
            group=self.group, client_id=self.client_id, topic=self.topic, heartbeat_ms=self.heartbeat_ms
        )
        timeout = max(0.5, min(2.0, self.heartbeat_ms / 1000))
        masters = self._masters()
        calls = [self.pool.get(a).stub.Heartbeat.future(req, timeout=timeout) for a in masters]
        view: list[str] | None = None
        for i, call in enumerate(calls):
            try:
                resp = call.result()
            except grpc.RpcError as exc:
                if i == 0 and not self._failing:
                    self._failing = True
                    log.warning("heartbeat to %s failed: %s", masters[0], exc.code())
                continue
            if i == 0:
                view = list(resp.members)
        now = time.monotonic()
        if view is not None:
            self._last_ok = now
            if self._failing:
                self._failing = False
                log.info("heartbeats to %s answered again", masters[0])
        elif now - self._last_ok > MISSED_HEARTBEATS * self.heartbeat_ms / 1000:
            view = [m for m in self.members if m != self.client_id]  # we have been dropped
        if view is not None and view != self.members:
            self.members = view
            self.changed.set()

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_ms / 1000):
            try:
                self.beat()
            except Exception:  # never let the heartbeat thread die
                log.exception("heartbeat failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def leave(self) -> None:
        """Tell every broker this member is gone (after its offsets are committed)."""
        req = pb.UnregisterRequest(group=self.group, client_id=self.client_id, topic=self.topic)
        calls = [self.pool.get(a).stub.Unregister.future(req, timeout=2.0) for a in self._masters()]
        for call in calls:
            with contextlib.suppress(grpc.RpcError):
                call.result()
