"""A broker's registration with its nameservers: one heartbeat loop.

Every `heartbeat_ms` the broker tells every configured nameserver who it is
(cluster, group, id, address, epoch, role, max offset, whether it creates
topics on first send) and which topics it serves. Nameservers are
independent: one being down delays nothing else.

A change worth announcing (a topic defined or grown) calls `poke()`, which
only marks a registration as due and wakes the loop: the loop registers
`SETTLE_S` after the first poke of a burst (one registration covers the
burst), and no sooner than `MIN_GAP_S` after the one before. `poke` never
waits for a registration, so the store's write path can call it.
`RegistrationSchedule` is that timing as plain logic.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import grpc

from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.security.identity import Kind
from core.security.serving import ChannelFactory, plaintext_channel

log = logging.getLogger(__name__)
SETTLE_S = 0.01  # after a change, wait this long for the rest of its burst
MIN_GAP_S = 0.1  # registrations caused by changes come no closer together than this


class RegistrationSchedule:
    """When the next registration is due: `heartbeat_s` after the last one,
    or sooner after a change (`poke`): `settle_s` after the first poke not
    yet covered, but never sooner than `min_gap_s` after the last
    registration. Times are seconds of the caller's clock."""

    def __init__(self, heartbeat_s: float, settle_s: float, min_gap_s: float, now: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.settle_s = settle_s
        self.min_gap_s = min(min_gap_s, heartbeat_s)
        self.last = now  # when the last registration started
        self.pending_since: float | None = None  # the first change it does not cover

    def poke(self, now: float) -> None:
        if self.pending_since is None:
            self.pending_since = now

    def due_in(self, now: float) -> float:
        """Seconds until the next registration (0: now)."""
        due = self.last + self.heartbeat_s
        if self.pending_since is not None:
            due = min(due, max(self.pending_since + self.settle_s, self.last + self.min_gap_s))
        return max(0.0, due - now)

    def started(self, now: float) -> None:
        """A registration starts now: it describes the broker as it is, so it
        covers every change poked before."""
        self.last = now
        self.pending_since = None


class Registrar:
    def __init__(
        self,
        nameservers: list[str],
        heartbeat_ms: int,
        describe: Callable[[], pb.BrokerRegistration],
        channel_to: ChannelFactory = plaintext_channel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`channel_to`: opens a channel to a nameserver's members' port
        (mutual TLS with TLS configured: core/security/serving.py)."""
        self.heartbeat_ms = heartbeat_ms
        self._describe = describe
        self._clock = clock
        self._channels = {a: channel_to(a, Kind.NAMESERVER) for a in nameservers}
        self._stubs = {a: nameserver_pb2_grpc.NameServerStub(ch) for a, ch in self._channels.items()}
        self._failing: set[str] = set()
        self._schedule = RegistrationSchedule(heartbeat_ms / 1000, SETTLE_S, MIN_GAP_S, clock())
        self._wake = threading.Condition()  # held only to read or change the schedule
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)

    def start(self) -> None:
        with self._wake:
            self._schedule.started(self._clock())
        self.register_once()
        self._thread.start()

    def poke(self) -> None:
        """Something the nameservers should hear about changed: register soon.
        Returns at once (never waits for a registration under way)."""
        with self._wake:
            self._schedule.poke(self._clock())
            self._wake.notify()

    def register_once(self) -> None:
        """One heartbeat to every nameserver at once, each with a short deadline,
        so an unreachable one delays no other."""
        req = pb.RegisterBrokerRequest(broker=self._describe())
        timeout = min(2.0, max(0.2, self.heartbeat_ms / 2000))
        calls = {a: stub.RegisterBroker.future(req, timeout=timeout) for a, stub in self._stubs.items()}
        for address, call in calls.items():
            try:
                call.result()
                if address in self._failing:
                    self._failing.discard(address)
                    log.info("registered with nameserver %s again", address)
            except grpc.RpcError as exc:
                if address not in self._failing:
                    self._failing.add(address)
                    log.warning("nameserver %s unreachable: %s", address, exc.code())

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (wait := self._schedule.due_in(self._clock())) > 0:
                    self._wake.wait(wait)
                if self._stopped:
                    return
                self._schedule.started(self._clock())
            self.register_once()

    def close(self, unregister: bool = True) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()
        if unregister:
            me = self._describe()
            req = pb.UnregisterBrokerRequest(
                broker_name=me.broker_name, broker_id=me.broker_id, address=me.address
            )
            for stub in self._stubs.values():
                with contextlib.suppress(grpc.RpcError):
                    stub.UnregisterBroker(req, timeout=1.0)
        for ch in self._channels.values():
            ch.close()
