"""Raw gRPC access to a secure cluster, for tests that attack it: channels
with or without TLS and client certificates, calls signed (or not) as any
account, with any clock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc

from core.pb.tailrace.v1 import broker_pb2_grpc, nameserver_pb2_grpc, replication_pb2_grpc
from core.security.certs import Issued
from core.security.signing import sign


def channel(
    address: str, ca: Path | None = None, cert: Issued | None = None, target_name: str = ""
) -> grpc.Channel:
    """Plaintext without `ca`; TLS verified with `ca`; with `cert`, presenting it."""
    if ca is None:
        return grpc.insecure_channel(address)
    key = cert.key_file.read_bytes() if cert else None
    chain = cert.cert_file.read_bytes() if cert else None
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key, chain)
    options = [("grpc.ssl_target_name_override", target_name)] if target_name else []
    return grpc.secure_channel(address, creds, options=options)


def broker(ch: grpc.Channel) -> Any:
    return broker_pb2_grpc.BrokerStub(ch)  # type: ignore[no-untyped-call]


def nameserver(ch: grpc.Channel) -> Any:
    return nameserver_pb2_grpc.NameServerStub(ch)  # type: ignore[no-untyped-call]


def replication(ch: grpc.Channel) -> Any:
    return replication_pb2_grpc.ReplicationStub(ch)  # type: ignore[no-untyped-call]


def signed(
    method: Any, request: Any, account: tuple[str, str] | None, timeout: float = 5.0, at_ms: int | None = None
) -> Any:
    """Call `method` (a stub attribute) signed as `account` (None: unsigned),
    dated `at_ms` (default: now)."""
    md: tuple[tuple[str, str], ...] = ()
    if account is not None:
        path = method._method.decode() if isinstance(method._method, bytes) else method._method
        md = sign(account[0], account[1], path, at_ms if at_ms is not None else int(time.time() * 1000))
    return method(request, metadata=md, timeout=timeout)


def code_of(fn: Any) -> grpc.StatusCode:
    """The status code `fn()` failed with (fails the test if it succeeded)."""
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    raise AssertionError("the call succeeded")
