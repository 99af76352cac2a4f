"""gRPC channels to brokers, with deadlines and error mapping.

Every call has a deadline (the client never hangs without one) and every
failure surfaces as a TailraceError: core.grpc_status maps them, and
`rpc_error` adds, for a connection that failed its TLS handshake, which
address and why (an untrusted certificate, a plaintext port), in words.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from consumer.channels import BROKER_OPTIONS, MAX_MESSAGE_BYTES, open_channel
from consumer.profile import PLAINTEXT, ClientSecurity
from core.errors import BrokerUnavailableError, TailraceError
from core.grpc_status import error_from_rpc
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.security.tls import explain_handshake_failure

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 10.0
__all__ = ["DEFAULT_TIMEOUT_S", "MAX_MESSAGE_BYTES", "BrokerConnection", "ConnectionPool", "rpc_error"]


def rpc_error(exc: grpc.RpcError, address: str, security: ClientSecurity = PLAINTEXT) -> TailraceError:
    """The TailraceError a failed call to `address` stands for. A TLS
    handshake failure is a `BrokerUnavailableError` that names the address
    and the reason; it says "failed to connect" since nothing was sent (so
    the producer's retry plan counts it as refused, not as maybe stored)."""
    err = error_from_rpc(exc)
    if isinstance(err, BrokerUnavailableError):
        why = explain_handshake_failure(err.message, address, security.ca_file)
        if why:
            return BrokerUnavailableError(f"failed to connect (TLS): {why}")
    return err


class BrokerConnection:
    def __init__(
        self, address: str, timeout_s: float = DEFAULT_TIMEOUT_S, security: ClientSecurity = PLAINTEXT
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.security = security
        self.channel = open_channel(address, security, BROKER_OPTIONS)
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)
        self.admin_stub = broker_pb2_grpc.BrokerAdminStub(self.channel)  # the operator's commands

    def call(self, method: Callable[..., T], request: Any, timeout_s: float | None = None) -> T:
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise self.error(exc) from None

    def error(self, exc: grpc.RpcError) -> TailraceError:
        """What a failed call of this connection (a future's too) stands for."""
        return rpc_error(exc, self.address, self.security)

    def close(self) -> None:
        self.channel.close()


class ConnectionPool:
    """One connection per broker address, opened on first use."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, security: ClientSecurity = PLAINTEXT) -> None:
        self.timeout_s = timeout_s
        self.security = security
        self._conns: dict[str, BrokerConnection] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> BrokerConnection:
        with self._lock:
            conn = self._conns.get(address)
            if conn is None:
                conn = self._conns[address] = BrokerConnection(address, self.timeout_s, self.security)
            return conn

    def close(self) -> None:
        with self._lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()
