"""A broker's link to the failover controllers: one heartbeat loop.

Every `controller_heartbeat_ms` the broker reports itself (node id, epoch,
whether it leads, max offset, and as master its in-sync proposal) to the
controller it believes leads and hands the `Directive` it answers to the
broker, which renews its lease, promotes itself, or follows another master.
Which controller to ask, and after a refusal or a failure which next, within
the same beat, is `ControllerChoice`'s decision (core/broker/controller_choice.py);
this loop makes the calls, each within its share of the beat's budget. A
beat that no controller answered does nothing: a master's lease simply runs
out (master/lease.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from core.broker.controller_choice import Attempt, ControllerChoice
from core.errors import NotControllerError
from core.grpc_status import error_from_rpc
from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.roles import Directive
from core.security.identity import Kind
from core.security.serving import ChannelFactory, plaintext_channel

log = logging.getLogger(__name__)
MIN_ATTEMPT_S = 0.005  # with less of the beat left, no further controller is tried


class Follower(Protocol):
    def controller_heartbeat(self) -> tuple[pb.ControllerHeartbeatRequest, int]: ...

    def on_directive(
        self, d: Directive, sent_at: float, request: pb.ControllerHeartbeatRequest, gen: int
    ) -> None: ...


class ControllerLink:
    def __init__(
        self,
        addresses: Sequence[str],
        heartbeat_ms: int,
        broker: Follower,
        channel_to: ChannelFactory = plaintext_channel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.choice = ControllerChoice(addresses)
        self.heartbeat_ms = heartbeat_ms
        self.broker = broker
        self.last_error = ""
        self._ignored_hint = ""  # the last leader hint ignored (logged once)
        self._clock = clock
        self._channel_to = channel_to
        self._channels: dict[str, grpc.Channel] = {}  # made on first use; only configured addresses
        self._stubs: dict[str, nameserver_pb2_grpc.NameServerStub] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-link", daemon=True)

    @property
    def leader(self) -> str:
        """The controller this broker follows (believes leads)."""
        return self.choice.leader

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.choice.addresses

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Heartbeat now (a role change should be known at once)."""
        self._wake.set()

    def _stub(self, address: str) -> nameserver_pb2_grpc.NameServerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = self._channel_to(address, Kind.NAMESERVER)  # the controller's members' port
            self._channels[address] = channel
            stub = self._stubs[address] = nameserver_pb2_grpc.NameServerStub(channel)
        return stub

    def beat(self) -> bool:
        """One heartbeat: ask controllers in turn until one answers, within
        the budget; True when one did (its directive handed to the broker)."""
        req, gen = self.broker.controller_heartbeat()
        budget = max(0.05, min(2.0, self.heartbeat_ms / 1000))
        started = self._clock()
        choice = self.choice
        attempt = choice.begin()
        while attempt.address:
            left = budget - (self._clock() - started)
            if left < MIN_ATTEMPT_S:
                choice.failed(attempt.address, "no time left in this heartbeat")
                break
            stub, timeout = self._stub(attempt.address), choice.share(attempt, left)
            sent_at = self._clock()
            try:
                resp = stub.ControllerHeartbeat(req, timeout=timeout)
            except grpc.RpcError as exc:
                attempt = self._next(attempt.address, exc)
                continue
            self._answered(attempt.address)
            d = Directive(
                resp.epoch,
                resp.master_id,
                resp.master_address,
                frozenset(resp.in_sync),
                resp.lease_ms,
                resp.master_member_address,
            )
            self.broker.on_directive(d, sent_at, req, gen)  # the lease counts from this attempt's send
            return True
        detail = choice.why or "no controller answered"
        if detail != self.last_error:
            log.warning("no controller answered the heartbeat: %s", detail)
            self.last_error = detail
        return False

    def _next(self, address: str, exc: grpc.RpcError) -> Attempt:
        err = error_from_rpc(exc)
        if isinstance(err, NotControllerError):
            attempt = self.choice.refused(address, err.leader_address)
        else:
            attempt = self.choice.failed(address, str(err))
        if attempt.ignored_hint and attempt.ignored_hint != self._ignored_hint:
            self._ignored_hint = attempt.ignored_hint
            log.warning(
                "controller %s names %s as the leader, which is not in broker.controller %s: ignored",
                address,
                attempt.ignored_hint,
                ",".join(self.choice.addresses),
            )
        return attempt

    def _answered(self, address: str) -> None:
        switch = self.choice.answered(address)
        if switch is not None:
            log.warning("following controller %s (was %s): %s", switch.new, switch.old, switch.reason)
        if self.last_error:
            log.info("controller %s answers again", address)
        self.last_error = ""

    def status(self) -> dict[str, str]:
        """For the broker's Status: the controller followed and why the last beat failed."""
        return {"controller": self.leader, "controller_error": self.last_error}

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
        for channel in self._channels.values():
            channel.close()
