"""gRPC channels to brokers, with deadlines and error mapping.

Every call has a deadline (the client never hangs without one) and every
failure surfaces as a TailraceError (core.grpc_status maps them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from core.grpc_status import error_from_rpc
from core.pb.tailrace.v1 import broker_pb2_grpc

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class BrokerConnection:
    def __init__(self, address: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 0),
            ],
        )
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)

    def call(self, method: Callable[..., T], request: Any, timeout_s: float | None = None) -> T:
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def close(self) -> None:
        self.channel.close()


class ConnectionPool:
    """One connection per broker address, opened on first use."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._conns: dict[str, BrokerConnection] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> BrokerConnection:
        with self._lock:
            conn = self._conns.get(address)
            if conn is None:
                conn = self._conns[address] = BrokerConnection(address, self.timeout_s)
            return conn

    def close(self) -> None:
        with self._lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()
