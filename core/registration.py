"""A broker's registration with its nameservers: one heartbeat loop.

Every `heartbeat_ms` the broker tells every configured nameserver who it is
(cluster, group, id, address, epoch, role, max offset) and which topics it
serves. Nameservers are independent: one being down delays nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import grpc

from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc

log = logging.getLogger(__name__)


class Registrar:
    def __init__(
        self,
        nameservers: list[str],
        heartbeat_ms: int,
        describe: Callable[[], pb.BrokerRegistration],
    ) -> None:
        self.heartbeat_ms = heartbeat_ms
        self._describe = describe
        self._channels = {a: grpc.insecure_channel(a) for a in nameservers}
        self._stubs = {a: nameserver_pb2_grpc.NameServerStub(ch) for a, ch in self._channels.items()}
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)

    def start(self) -> None:
        self.register_once()
        self._thread.start()

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
        while not self._stop.wait(self.heartbeat_ms / 1000):
            self.register_once()

    def close(self, unregister: bool = True) -> None:
        self._stop.set()
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
