"""A cluster across three network namespaces: one host per process.

Three namespaces joined by veth pairs to a bridge (each its own address in
10.77.0.0/24, the bridge 10.77.0.254 so this test can reach them), a
topology whose hosts start processes with `ip netns exec`, and a produce and
consume across them. Skips where network namespaces cannot be created.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import cluster
from deploy.waits import wait_routed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[list[tuple[str, str]]]:
    tag = uuid.uuid4().hex[:5]
    names = [f"tr{tag}{i}" for i in (1, 2, 3)]
    bridge = f"trbr{tag}"
    try:
        sh("ip", "netns", "add", names[0])
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"network namespaces are not permitted here: {exc}")
    made: list[str] = [names[0]]
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", "10.77.0.254/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        out = []
        for i, ns in enumerate(names, start=1):
            if ns not in made:
                sh("ip", "netns", "add", ns)
                made.append(ns)
            veth, peer = f"v{tag}{i}", f"p{tag}{i}"
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", peer, "master", bridge, "up")
            sh("ip", "link", "set", veth, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", veth)
            sh("ip", "-n", ns, "link", "set", veth, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            out.append((ns, f"10.77.0.{i}"))
        yield out
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_cluster_across_three_namespaces(namespaces: list[tuple[str, str]], tmp_path: Path) -> None:
    (ns1, a1), (ns2, a2), (ns3, a3) = namespaces
    topo = tmp_path / "netns.toml"
    topo.write_text(
        '[cluster]\nsecret = "netns"\nsegment_bytes = 67108864\n'
        f'[hosts.h1]\nexec_prefix = ["ip", "netns", "exec", "{ns1}"]\nlisten_host = "{a1}"\n'
        f'[hosts.h2]\nexec_prefix = ["ip", "netns", "exec", "{ns2}"]\nlisten_host = "{a2}"\n'
        f'[hosts.h3]\nexec_prefix = ["ip", "netns", "exec", "{ns3}"]\nlisten_host = "{a3}"\n'
        '[[nameserver]]\nname = "ns"\nhost = "h1"\n'
        '[[group]]\nname = "g"\nreplication = "sync"\nslaves = 1\nhost = "h2"\nslave_hosts = ["h3"]\n'
    )
    d = tmp_path / "c"
    try:
        state = cluster.up(topo, d)
        hosts = {p["name"]: p["address"].split(":")[0] for p in state["processes"]}
        assert hosts == {"ns": a1, "g": a2, "g-s1": a3}  # one process per namespace
        namesrv = state["processes"][0]["address"]
        profile = state["profile"]  # TLS and the admin account, across hosts: certificates name 10.77.0.x
        run = [sys.executable, "-m", "deploy.cli"]
        t = subprocess.run(
            [*run, "topic", "create", "--profile", profile, "--namesrv", namesrv, "--topic", "N",
             "--queues", "4"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert t.returncode == 0, t.stderr
        wait_routed(
            [namesrv], "N", timeout_s=20, profile=profile
        )  # the master's next heartbeat puts the topic in the routes
        p = subprocess.run(
            [*run, "produce", "--profile", profile, "--namesrv", namesrv, "--topic", "N", "--count", "2000",
             "--batch", "100", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["ok"] == 2000  # sync: every one is on the slave too
        c = subprocess.run(
            [*run, "consume", "--profile", profile, "--namesrv", namesrv, "--group", "g1", "--topic", "N",
             "--count", "2000",
             "--timeout-ms", "30000", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert c.returncode == 0, c.stderr
        assert json.loads(c.stdout)["unique"] == 2000
        st = cluster.status(d)
        assert all(r["healthy"] for r in st["processes"])
    finally:
        cluster.down(d)
