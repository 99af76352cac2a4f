"""A consumer's group membership: heartbeats on a background thread.

Every `heartbeat_ms` the member heartbeats, in parallel and with a short
deadline, to the master of the designated broker group (the first by name
with a live master) and to the masters of the groups hosting its assigned
queues, and to no other broker: a consumer connects only to the nameservers
and the brokers it reads from. The group's view of its members comes from
the designated group, so every member reads the same list (if that group's
master dies, the next group is designated and learns every member at their
next heartbeat). If that broker does not answer,
the last view is kept; once it has not answered for three heartbeat
intervals the broker has dropped this member, so the member drops itself from
its view too (and so gives up its queues) rather than keep reading queues
that others have taken over. When the view changes, `changed` is set and the
consumer rebalances on its next poll. A heartbeat refused access
(UNAUTHENTICATED, PERMISSION_DENIED: the account may not use the group) is
kept in `denied` for the consumer to raise, until one is answered again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import grpc

from consumer.connection import ConnectionPool
from consumer.retry_plan import ACCESS_REFUSED
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
        assigned_groups: Callable[[], set[str]] = set,
    ) -> None:
        self.assigned_groups = assigned_groups
        self.pool = pool
        self.routes = routes
        self.group = group
        self.topic = topic
        self.client_id = client_id
        self.heartbeat_ms = heartbeat_ms
        self.members: list[str] = []
        self.changed = threading.Event()
        self.denied: TailraceError | None = None  # the designated master refuses this member
        self._listeners = [self.changed]
        self._last_ok = time.monotonic()
        self.answered = 0  # heartbeats the first master answered (a progress count for waits)
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)

    def _masters(self) -> list[str]:
        try:
            route = self.routes.get(self.topic)
        except TailraceError as exc:
            log.warning("no route for %s: %s", self.topic, exc)
            return []
        out: list[str] = []
        mine = self.assigned_groups()
        for g in sorted(route.groups, key=lambda g: g.broker_name):
            m = g.master
            if m is not None and (not out or g.broker_name in mine):
                out.append(m.address)  # the designated group first, then the assigned ones
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
                if i == 0:
                    err = self.pool.get(masters[0]).error(exc)
                    if isinstance(err, ACCESS_REFUSED):
                        self.denied = err
                    if not self._failing:
                        self._failing = True
                        log.warning("heartbeat to %s failed: %s", masters[0], err)
                continue
            if i == 0:
                self.denied = None
                view = list(resp.members)
        now = time.monotonic()
        if view is not None:
            self.answered += 1
            self._last_ok = now
            if self._failing:
                self._failing = False
                log.info("heartbeats to %s answered again", masters[0])
        elif now - self._last_ok > MISSED_HEARTBEATS * self.heartbeat_ms / 1000:
            view = [m for m in self.members if m != self.client_id]  # we have been dropped
        if view is not None and view != self.members:
            self.members = view
            for e in list(self._listeners):
                e.set()

    def subscribe(self) -> threading.Event:
        """Another event set at every change of the view (a second consumer
        of the same group sharing this membership)."""
        e = threading.Event()
        self._listeners.append(e)
        return e

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
