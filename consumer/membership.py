"""A consumer's group membership: heartbeats on a background thread.

Every `heartbeat_ms` the member heartbeats to the master of every group that
hosts its topic. The member list of the first group that answers (groups in
name order, so every member reads the same broker) is the group's view;
when it changes, `changed` is set and the consumer rebalances on its next poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from consumer.connection import ConnectionPool
from consumer.routing import Routes
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)


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
            group=self.group, client_id=self.client_id, topic=self.topic,
            heartbeat_ms=self.heartbeat_ms,
        )  # fmt: skip
        view: list[str] | None = None
        for address in self._masters():
            conn = self.pool.get(address)
            try:
                resp = conn.call(conn.stub.Heartbeat, req, timeout_s=max(1.0, self.heartbeat_ms / 1000))
            except TailraceError as exc:
                log.debug("heartbeat to %s failed: %s", address, exc)
                continue
            if view is None:
                view = list(resp.members)
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
        req = pb.UnregisterRequest(group=self.group, client_id=self.client_id)
        for address in self._masters():
            conn = self.pool.get(address)
            with contextlib.suppress(TailraceError):
                conn.call(conn.stub.Unregister, req, timeout_s=2.0)
