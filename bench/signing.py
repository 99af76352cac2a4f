"""What signing every call costs a client: signed channels against bare ones.

    tailrace bench signing [--calls 1000] [--rounds 12] [--tls] [--json]

A small Broker servicer (Status only, no interceptor) on a loopback port in
this process, and `--calls` unary calls per round on four channels:

- bare: no signature;
- headers: bare, each call passing a fixed signature's two headers (what
  sending them costs, at both ends, without making them);
- signed: consumer/signer.py's channel (the client's);
- interceptor: signed by a gRPC interceptor instead (the API
  consumer/signer.py does not use), for reference;

rounds in alternating orders (drift cancels), for sync gRPC and for
`grpc.aio`. Reports the best round's wall time and CPU time (this
process's: client and server) per call of each, and the ratios to bare
(the best round: on a shared machine the others measure the neighbours);
then the signature alone: an HMAC and a tuple when it signs, a dict look-up
within the same millisecond. `--tls` serves and dials over TLS (a throwaway
CA), as production does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from collections import namedtuple
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from consumer.channels import BROKER_OPTIONS, open_aio_channel, open_channel
from consumer.profile import ClientSecurity
from consumer.signer import Signature
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.security.certs import CertificateAuthority

AK, SK = "bench", "bench-secret-key-0123"
KINDS = ("bare", "headers", "signed", "interceptor")
# "headers": a bare channel whose calls pass a fixed signature's two headers: what
# sending them costs (client and server), without making them
HEADERS = Signature(AK, SK)("/tailrace.v1.Broker/Status")


class _Status(broker_pb2_grpc.BrokerServicer):
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(broker_name="bench")


# ---- the reference: signing with gRPC's interceptor API -------------------------------


class _Details(
    namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _SyncInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    def intercept_unary_unary(self, continuation: Any, d: Any, request: Any) -> Any:
        md = self.signature(d.method, d.metadata)
        return continuation(
            _Details(d.method, d.timeout, md, d.credentials, d.wait_for_ready, d.compression), request
        )


class _AioInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    async def intercept_unary_unary(self, continuation: Any, d: Any, request: Any) -> Any:
        md: Any = self.signature(d.method.decode(), d.metadata)
        return await continuation(
            grpc.aio.ClientCallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready), request
        )


# ---- rounds -------------------------------------------------------------------------------


class Target:
    def __init__(self, address: str, ca_pem: bytes | None) -> None:
        self.address = address
        self.bare = ClientSecurity(ca_pem, server_name="localhost" if ca_pem else "")
        self.signed = ClientSecurity(ca_pem, self.bare.server_name, AK, SK)

    def metadata(self, kind: str) -> Any:
        return HEADERS if kind == "headers" else None

    def sync_channel(self, kind: str) -> grpc.Channel:
        if kind == "signed":
            return open_channel(self.address, self.signed, BROKER_OPTIONS)
        channel = open_channel(self.address, self.bare, BROKER_OPTIONS)
        if kind == "interceptor":
            return grpc.intercept_channel(channel, _SyncInterceptor(Signature(AK, SK)))
        return channel

    def aio_channel(self, kind: str) -> grpc.aio.Channel:
        if kind == "signed":
            return open_aio_channel(self.address, self.signed, BROKER_OPTIONS)
        if kind == "interceptor":
            opts = list(BROKER_OPTIONS)
            if self.bare.tls:
                opts.append(("grpc.ssl_target_name_override", self.bare.server_name))
                creds = grpc.ssl_channel_credentials(self.bare.ca_pem)
                return grpc.aio.secure_channel(
                    self.address, creds, opts, interceptors=[_AioInterceptor(Signature(AK, SK))]
                )
            return grpc.aio.insecure_channel(
                self.address, opts, interceptors=[_AioInterceptor(Signature(AK, SK))]
            )
        return open_aio_channel(self.address, self.bare, BROKER_OPTIONS)


def _sync_round(target: Target, kind: str, calls: int) -> tuple[float, float]:
    with target.sync_channel(kind) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)  # type: ignore[no-untyped-call]
        req, md = pb.StatusRequest(), target.metadata(kind)
        for _ in range(50):  # connect, warm up
            stub.Status(req, timeout=10, metadata=md)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            stub.Status(req, timeout=10, metadata=md)
        return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls


async def _aio_round(target: Target, kind: str, calls: int) -> tuple[float, float]:
    channel = target.aio_channel(kind)
    try:
        stub = broker_pb2_grpc.BrokerStub(channel)  # type: ignore[no-untyped-call]
        req, md = pb.StatusRequest(), target.metadata(kind)
        for _ in range(50):
            await stub.Status(req, timeout=10, metadata=md)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await stub.Status(req, timeout=10, metadata=md)
        return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls
    finally:
        await channel.close()


def _compare(run: Callable[[str], tuple[float, float]], rounds: int) -> dict[str, float]:
    """Per kind, the best round's wall time and CPU time (this process's:
    client and server) per call, and their ratios to bare."""
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    for i in range(rounds):
        for kind in KINDS if i % 2 == 0 else reversed(KINDS):
            w, c = run(kind)
            wall[kind].append(w)
            cpu[kind].append(c)
    out: dict[str, float] = {}
    for name, times in (("wall", wall), ("cpu", cpu)):
        best = {k: min(v) for k, v in times.items()}
        out.update({f"{name}_{k}_us": round(best[k] * 1e6, 1) for k in KINDS})
        out[f"{name}_ratio"] = round(best["signed"] / best["bare"], 3)
        out[f"{name}_headers_ratio"] = round(best["headers"] / best["bare"], 3)
        out[f"{name}_interceptor_ratio"] = round(best["interceptor"] / best["bare"], 3)
    return out


def _signature_alone(calls: int) -> dict[str, float]:
    warm = Signature(AK, SK)
    t0 = time.perf_counter()
    for _ in range(calls):
        warm("/tailrace.v1.Broker/Status")
    cached = (time.perf_counter() - t0) / calls
    ticks = itertools.count()
    cold = Signature(AK, SK, clock=lambda: next(ticks) / 1000)  # a new millisecond every call
    t0 = time.perf_counter()
    for _ in range(calls):
        cold("/tailrace.v1.Broker/Status")
    signing = (time.perf_counter() - t0) / calls
    return {"signing_us": round(signing * 1e6, 2), "cached_us": round(cached * 1e6, 2)}


def _server(tls: bool, workdir: Path) -> tuple[grpc.Server, Target]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    broker_pb2_grpc.add_BrokerServicer_to_server(_Status(), server)  # type: ignore[no-untyped-call]
    if not tls:
        return server, Target(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}", None)
    ca = CertificateAuthority.create("bench CA")
    issued = ca.issue("bench", [], ["localhost"], ["127.0.0.1"], workdir, "server")
    creds = grpc.ssl_server_credentials([(issued.key_file.read_bytes(), issued.cert_file.read_bytes())])
    return server, Target(f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', creds)}", ca.pem)


def measure(calls: int, rounds: int, tls: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-signing-") as tmp:
        server, target = _server(tls, Path(tmp))
        server.start()
        try:
            sync = _compare(lambda kind: _sync_round(target, kind, calls), rounds)
            aio = _compare(lambda kind: asyncio.run(_aio_round(target, kind, calls)), rounds)
        finally:
            server.stop(None)
    return {"calls": calls, "rounds": rounds, "tls": tls, "sync": sync, "aio": aio,
            "signature": _signature_alone(calls * 10)}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=1000, help="unary calls per round")
    p.add_argument("--rounds", type=int, default=12, help="rounds of each (alternating orders)")
    p.add_argument("--tls", action="store_true", help="over TLS (a throwaway CA)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    result = measure(args.calls, args.rounds, args.tls)
    if args.json:
        print(json.dumps(result))
        return 0
    for kind in ("sync", "aio"):
        r = result[kind]
        for m in ("wall", "cpu"):
            cells = [f"bare {r[f'{m}_bare_us']:.1f}"]
            for k, ratio in (
                ("headers", "headers_ratio"),
                ("signed", "ratio"),
                ("interceptor", "interceptor_ratio"),
            ):
                cells.append(f"{k} {r[f'{m}_{k}_us']:.1f} (x{r[f'{m}_{ratio}']:.3f})")
            print(f"{kind:4} {m:4} us/call: " + ", ".join(cells))
    s = result["signature"]
    print(f"the signature alone: {s['signing_us']:.2f} us (cached within the ms: {s['cached_us']:.2f} us)")
    return 0
