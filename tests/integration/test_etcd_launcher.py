"""deploy/etcd_cluster.py itself: a port taken between picking and etcd's
bind is retried on new ports; stop() is final and safe twice; no etcd
installed fails the fixture (never skips)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from deploy import etcd_cluster
from deploy.etcd_cluster import EtcdFailed, LocalEtcd
from tests.helpers import etcd as etcd_helper

pytestmark = pytest.mark.integration


def test_a_port_taken_before_etcd_binds_it_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        real = etcd_cluster.free_ports
        calls: list[int] = []

        def racy(host: str, n: int) -> list[int]:
            calls.append(n)
            ports = real(host, n)
            return [taken.getsockname()[1], *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(etcd_cluster, "free_ports", racy)
        with LocalEtcd(tmp_path, members=1) as cluster:
            cluster.start(20)
            assert len(calls) == 2
            assert "address already in use" in cluster.members[0].log_path.read_text()
            with cluster.client() as c:
                assert c.put(b"k", b"v") > 0
            pid = cluster.members[0].pid
            cluster.stop()
            cluster.stop()
            assert pid is not None and not cluster.members[0].running()
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_a_member_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(EtcdFailed, match="exited with 1"):
        LocalEtcd(tmp_path, members=1, binary="/bin/false").start(5)
    with pytest.raises(EtcdFailed, match="not found"):
        LocalEtcd(tmp_path, members=1, binary="/nonexistent/etcd").start(5)


def test_no_etcd_installed_fails_the_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_helper, "etcd_binary", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="not installed"), etcd_helper.local_etcd(tmp_path):
        pass
