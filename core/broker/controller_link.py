"""A broker's link to the failover controller: one heartbeat loop.

Every `controller_heartbeat_ms` the broker reports itself (node id, epoch,
whether it leads, max offset, and as master its in-sync proposal) and hands
the controller's `Directive` to the broker, which renews its lease, promotes
itself, or follows another master. A failed heartbeat does nothing: a
master's lease simply runs out (master/lease.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import grpc

from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.roles import Directive
from core.security.identity import Kind
from core.security.serving import ChannelFactory, plaintext_channel

log = logging.getLogger(__name__)


class Follower(Protocol):
    def controller_heartbeat(self) -> tuple[pb.ControllerHeartbeatRequest, int]: ...

    def on_directive(
        self, d: Directive, sent_at: float, request: pb.ControllerHeartbeatRequest, gen: int
    ) -> None: ...


class ControllerLink:
    def __init__(
        self,
        address: str,
        heartbeat_ms: int,
        broker: Follower,
        channel_to: ChannelFactory = plaintext_channel,
    ) -> None:
        self.address = address
        self.heartbeat_ms = heartbeat_ms
        self.broker = broker
        self.last_error = ""
        self._channel = channel_to(address, Kind.NAMESERVER)  # the controller's members' port
        self._stub = nameserver_pb2_grpc.NameServerStub(self._channel)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Heartbeat now (a role change should be known at once)."""
        self._wake.set()

    def beat(self) -> bool:
        req, gen = self.broker.controller_heartbeat()
        sent_at = time.monotonic()
        timeout = max(0.05, min(2.0, self.heartbeat_ms / 1000))
        try:
            resp = self._stub.ControllerHeartbeat(req, timeout=timeout)
        except grpc.RpcError as exc:
            detail = f"{exc.code()}: {exc.details()}"
            if detail != self.last_error:
                log.warning("controller %s: %s", self.address, detail)
                self.last_error = detail
            return False
        self.last_error = ""
        d = Directive(
            resp.epoch,
            resp.master_id,
            resp.master_address,
            frozenset(resp.in_sync),
            resp.lease_ms,
            resp.master_member_address,
        )
        self.broker.on_directive(d, sent_at, req, gen)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception:  # never die: the lease depends on this loop
                log.exception("controller heartbeat failed")
            self._wake.wait(self.heartbeat_ms / 1000)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._channel.close()
