"""The failover controller over a real etcd: the local-ha topology as users
start it (3 etcd members with TLS, 3 nameservers running controllers, a
master and 2 sync slaves), and a running file-store cluster moved to etcd
with its epochs kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.etcd_cluster import LocalEtcd
from deploy.waits import poll_until
from tests.helpers.cli import alive, cli

pytestmark = pytest.mark.integration


def status(d: Path) -> dict[str, Any]:
    r = cli("cluster", "status", "--dir", str(d), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(json.loads(r.stdout))


def test_local_ha_up_status_down(tmp_path: Path) -> None:
    d = tmp_path / "ha"
    r = cli("cluster", "up", "--topology", "local-ha", "--dir", str(d))
    pids: list[int] = []
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        st = status(d)
        pids = [p["pid"] for p in st["processes"]]
        poll_until(lambda: status(d)["controller"]["broker-a"]["in_sync"] == [2, 3], 30, "slaves in sync")
        st = status(d)
        assert [p["role"] for p in st["processes"]] == ["etcd"] * 3 + ["nameserver"] * 3 + [
            "master", "slave", "slave",
        ]  # fmt: skip
        assert all(p["healthy"] for p in st["processes"]), st
        parts = {p["name"]: p.get("controller") for p in st["processes"] if p["role"] == "nameserver"}
        assert sorted(parts.values()) == ["leader", "standby", "standby"], parts
        assert st["controller_leader"] == next(n for n, c in parts.items() if c == "leader")
        g = st["controller"]["broker-a"]
        assert g["epoch"] == 1 and g["status"] == "ok" and g["in_sync"] == [2, 3]
        state = json.loads((d / "cluster.json").read_text())
        assert all(e.startswith("https://127.0.0.1:") for e in state["etcd_endpoints"])  # TLS by default
    finally:
        down = cli("cluster", "down", "--dir", str(d))
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids and not any(alive(pid) for pid in pids)  # etcd members included


@pytest.mark.slow  # CI time (README: the slow set)
def test_a_running_file_cluster_moves_to_etcd_keeping_its_epochs(tmp_path: Path, etcd3: LocalEtcd) -> None:
    d = tmp_path / "c"
    r = cli("cluster", "up", "--topology", "local-failover", "--dir", str(d), "--insecure")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        poll_until(lambda: status(d)["controller"]["broker-a"]["in_sync"] == [2, 3], 30, "slaves in sync")
        before = status(d)["controller"]["broker-a"]
        refused = cli("cluster", "migrate-controller", "--dir", str(d), "--etcd", "http://127.0.0.1:1")
        assert refused.returncode != 0  # etcd unreachable: nothing stopped, nothing changed
        assert status(d)["controller_leader"] == "namesrv-1"

        m = cli("cluster", "migrate-controller", "--dir", str(d), "--etcd", ",".join(etcd3.endpoints))
        assert m.returncode == 0, m.stdout + m.stderr
        assert json.loads(m.stdout.splitlines()[-1])["epochs"] == {"broker-a": before["epoch"]}
        with etcd3.client() as kv:
            stored = json.loads(kv.get(b"/tailrace/DefaultCluster/controller/groups/broker-a").kvs[0].value)
        assert (stored["epoch"], stored["master_id"]) == (before["epoch"], before["master_id"])

        def leads_in_sync() -> bool:
            st = status(d)
            g = st["controller"].get("broker-a", {})
            return st.get("controller_leader") == "namesrv-1" and g.get("status") == "ok"

        poll_until(leads_in_sync, 30, "the etcd controller leading, the master renewing")
        after = status(d)["controller"]["broker-a"]
        assert (after["epoch"], after["master_id"]) == (before["epoch"], before["master_id"])

        assert cli("cluster", "kill", "broker-a", "--dir", str(d)).returncode == 0

        def elected() -> bool:
            g = status(d)["controller"].get("broker-a", {})
            return bool(g.get("epoch", 0) > before["epoch"])

        poll_until(elected, 60, "an election by the etcd controller")
        g = status(d)["controller"]["broker-a"]
        assert g["epoch"] == before["epoch"] + 1 and g["master_id"] in (2, 3)
        with etcd3.client() as kv:
            stored = json.loads(kv.get(b"/tailrace/DefaultCluster/controller/groups/broker-a").kvs[0].value)
        assert stored["epoch"] == before["epoch"] + 1  # decided in etcd
    finally:
        cli("cluster", "down", "--dir", str(d))
