"""tailrace cluster up / status / down with the shipped topologies."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from core.errors import TailraceError
from deploy import cluster
from tests.helpers.cli import alive, cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "topology,roles",
    [
        ("local-1m-2s", ["nameserver", "master", "slave", "slave"]),
        ("local-2g", ["nameserver", "nameserver", "master", "slave", "master", "slave"]),
    ],
)
def test_up_status_down(tmp_path: Path, topology: str, roles: list[str]) -> None:
    d = tmp_path / "c"
    r = cli("cluster", "up", "--topology", topology, "--dir", str(d))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert (d / "cluster.json").stat().st_mode & 0o077 == 0  # owner only
        again = cli("cluster", "up", "--topology", topology, "--dir", str(d))
        assert again.returncode != 0 and "already running" in again.stdout + again.stderr
        st = json.loads(cli("cluster", "status", "--dir", str(d), "--json").stdout)
        assert [p["role"] for p in st["processes"]] == roles
        assert all(p["healthy"] for p in st["processes"]), st
        masters = [p for p in st["processes"] if p["role"] == "master"]
        assert all(len(p["in_sync"]) == roles.count("slave") // len(masters) for p in masters)
        pids = [p["pid"] for p in st["processes"]]
    finally:
        down = cli("cluster", "down", "--dir", str(d))
    assert down.returncode == 0
    assert not any(alive(pid) for pid in pids)  # nothing left running
    assert not (d / "cluster.json").exists()


def test_up_with_a_broken_config_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    topo = tmp_path / "bad.toml"
    topo.write_text(
        '[cluster]\nsecret = "s"\n[[nameserver]]\nname = "ns"\n'
        '[[group]]\nname = "g"\nslaves = 1\n[group.set]\n"store.flush" = "sometimes"\n'
    )
    before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    with pytest.raises(TailraceError) as exc:
        cluster.up(topo, tmp_path / "c")
    assert "g" in str(exc.value) and "store.flush" in str(exc.value)

    def cmdline(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except OSError:  # gone meanwhile
            return ""

    leftover = [
        pid
        for pid in ({int(p) for p in os.listdir("/proc") if p.isdigit()} - before)
        if alive(pid) and "deploy.cli" in cmdline(pid)
    ]
    assert leftover == []
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_a_cluster_keeps_its_secrets_off_command_lines_and_out_of_reach(tmp_path: Path) -> None:
    """`cluster up` is secure by default: TLS and accounts on, the admin's
    secret key only in owner-only files, never on a command line or in
    cluster.json; a client without the profile is turned away."""
    d = tmp_path / "c"
    r = cli("cluster", "up", "--topology", "local-1m-2s", "--dir", str(d))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        state = json.loads((d / "cluster.json").read_text())
        profile = Path(state["profile"])
        secret = tomllib.loads(profile.read_text())["secret_key"]
        keys = [p.read_text() for p in (d / "tls").glob("*.key")]
        assert len(secret) >= 32 and len(keys) == 1 + 4  # the CA and one per process
        for p in state["processes"]:
            cmdline = Path(f"/proc/{p['pid']}/cmdline").read_text(errors="replace")
            assert "tls.cert_file" in cmdline  # it runs with TLS...
            for s in (secret, "local-demo-secret", *keys):
                assert s not in cmdline, p["name"]  # ...and no secret is on its command line
        assert secret not in (d / "cluster.json").read_text() and "local-demo-secret" not in str(state)
        for path in (d, d / "tls", profile, d / "acl.toml", d / "cluster.json", *(d / "tls").glob("*.key")):
            assert path.stat().st_mode & 0o077 == 0, path  # owner only
        for p in state["processes"]:
            data = Path(p["dir"]) / "data"
            assert not data.exists() or data.stat().st_mode & 0o077 == 0, data
        ns = next(p["address"] for p in state["processes"] if p["role"] == "nameserver")
        ok = cli("produce", "--namesrv", ns, "--topic", "t", "--count", "10", "--profile", str(profile))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        args = ("consume", "--namesrv", ns, "--group", "g", "--topic", "t", "--count", "10", "--timeout-ms")
        plain = cli(*args, "3000")
        assert plain.returncode != 0 and "tailrace consume:" in plain.stderr  # told, within its timeout
        assert cli(*args, "30000", "--profile", str(profile)).returncode == 0
    finally:
        cli("cluster", "down", "--dir", str(d))
