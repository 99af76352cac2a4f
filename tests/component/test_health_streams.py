"""Health `Watch` streams hold no server thread: a prober with many open
streams cannot starve a server of the workers every other call needs."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.grpc_server import build_server, set_serving
from core.security.acl import AclFile
from core.security.guard import AuthGuard, SecurityPolicy
from core.security.identity import Kind, Member

pytestmark = pytest.mark.component


def test_open_watch_streams_leave_the_workers_free(tmp_path: Path) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text('[[account]]\naccess_key = "a"\nsecret_key = "0123456789abcdef"\n')
    acl.chmod(0o600)
    policy = SecurityPolicy(Member("c", Kind.BROKER, "g", 0), tls=False, acl=AclFile(acl, 0))
    server, health = build_server(2, 64, 1 << 20, [AuthGuard(policy, lambda: 0)])  # two workers
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    set_serving(health, True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10) for _ in range(8)]
    try:
        for w in watches:  # each stream is open and has answered once
            assert next(w).status == health_pb2.HealthCheckResponse.SERVING
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for w in watches:
            w.cancel()
        channel.close()
        server.stop(0)
