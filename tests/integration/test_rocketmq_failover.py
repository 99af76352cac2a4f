"""Conformance: a master SIGKILLed under a failover topology while RocketMQ
5's official Python client (`rocketmq-python-client` 5.1.2, unmodified, in
its own processes: tests/helpers/rmq_client.py) produces and receives
through `tailrace proxy`: no acknowledged message lost, pop state intact.

The cluster is `local-failover` started by `cluster up` (secure; a
controller on the nameserver, one group: a master and two slaves, sync
replication, so an acknowledged send or ack is on a slave) with the drills'
fast timings (a 1 s lease, 100 ms controller heartbeats) and one proxy. An
official producer sends a numbered stream, one message every 50 ms, and
logs each result; an official SimpleConsumer receives (a 4 s invisible
duration), acks each message 0.5 s after it got it (one ack at a time, on
its own thread, so acks straddle the kill), and leaves every 7th message
unacked on its first delivery. At a seeded moment the master is killed;
the controller promotes a slave; the proxy follows the new route. The
checks (tests/helpers/rmq_failover.py): every acknowledged send delivered
and acked; an acked message never delivered again; a failed ack's message
delivered again (one ack open at the kill excepted: it may have been
applied); attempts and generations counting up across the failover.

One seed runs in CI (about 20 s); four more are marked `drill`.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer import Admin
from consumer.profile import Profile
from deploy import cluster
from deploy.drill_view import ClusterView
from deploy.topology import Topology, resolve_topology
from deploy.waits import poll_until, wait_routed
from tests.helpers.rmq_failover import check, pending, read_lines
from tests.helpers.rmq_setup import Running

pytestmark = pytest.mark.integration
TOPIC, GROUP = "fo-t", "fo-g"
INVISIBLE_S = 4
HOLD_EVERY = 7


def fast(t: Topology) -> None:
    """The drills' fast timings, and a proxy."""
    t.lease_ms, t.controller_heartbeat_ms, t.heartbeat_ms = 1000, 100, 200
    t.rocketmq_proxies = 1


@pytest.fixture
def cdir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "cluster"
    try:
        yield d
    finally:
        cluster.down(d)


def run(seed: int, cdir: Path, home: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    print(f"seed {seed}")
    t_start = time.monotonic()
    state = cluster.up(resolve_topology("local-failover"), cdir, tune=fast)
    view = ClusterView(cdir)
    clients: list[Running] = []
    try:
        poll_until(view.all_in_sync, 30, "every slave in sync", every_s=0.05)
        profile = Profile.load(cdir / "client.toml")
        with Admin(namesrv=view.nameservers, profile=profile) as admin:
            admin.create_topic(TOPIC, 2)
        wait_routed(view.nameservers, TOPIC, profile=profile)
        base = {
            "endpoints": ";".join(state["rocketmq_endpoints"]), "tls": True, "topic": TOPIC,
            "ak": profile.access_key, "sk": profile.secret_key,
        }  # fmt: skip
        plog, clog = home / "produce.jsonl", home / "consume.jsonl"
        ca = Path(profile.ca_file)
        consumer = Running(
            home, ca,
            {**base, "mode": "simple_stream", "group": GROUP, "log": str(clog), "invisible_s": INVISIBLE_S,
             "ack_delay_s": 0.5, "hold_every": HOLD_EVERY, "hold_phase": rng.randrange(HOLD_EVERY)},
        )  # fmt: skip
        clients.append(consumer)
        producer = Running(home, ca, {**base, "mode": "stream", "prefix": "fo", "log": str(plog)})
        clients.append(producer)

        acks_before = rng.randint(20, 40)  # the schedule: how far into the stream the master dies

        def acked_ok() -> int:
            return sum(1 for c in read_lines(clog) if c["ev"] == "ack" and c["ok"])

        poll_until(lambda: acked_ok() >= acks_before, 60, f"{acks_before} acks before the kill", every_s=0.05)
        epoch0, master = view.epoch(), view.master()
        view.signal(master, signal.SIGKILL)
        t_kill = time.time()
        print(f"SIGKILL {master} after {acks_before} acks (epoch {epoch0})")
        poll_until(lambda: view.epoch() > epoch0, 30, "a slave promoted", every_s=0.05)
        t_elected = time.time()
        print(f"elected {view.master()} in {t_elected - t_kill:.2f} s")

        def sent_after(t: float) -> int:
            return sum(1 for p in read_lines(plog) if p["ok"] and p["t0"] > t)

        poll_until(lambda: sent_after(t_elected) >= 30, 60, "30 sends acknowledged by the new master")
        producer.stop()
        poll_until(
            lambda: not pending(read_lines(plog), read_lines(clog), t_kill),
            60,
            "every acknowledged send received and acked",
            every_s=0.2,
        )
        consumer.stop()
        proxy_log = view.log_of("proxy-1").read_text()
        assert " ERROR " not in proxy_log and "Traceback" not in proxy_log, proxy_log[-3000:]
        report = check(read_lines(plog), read_lines(clog), t_kill)
        out = {**report.__dict__, "failover_s": round(t_elected - t_kill, 2), "seed": seed}
        out["seconds"] = round(time.monotonic() - t_start, 1)
        print(json.dumps(out, indent=1))
        return out
    finally:
        for c in clients:
            c.kill()
        view.close()


def assert_intact(r: dict[str, Any]) -> None:
    assert r["violations"] == [], r["violations"]
    assert r["acknowledged"] > 0 and r["acknowledged_after_kill"] >= 30
    assert r["acked_before_kill"] >= 20  # none of them delivered again (a violation otherwise)
    assert r["held_across"] >= 1  # a message left unacked before the kill came back after it, attempt >= 2
    assert r["acks_across_ok"] >= 1  # the new master took a handle the old one issued
    assert len(r["in_flight_at_kill"]) <= 1


def test_master_killed_while_official_clients_produce_and_receive(cdir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert_intact(run(41, cdir, home))


@pytest.mark.drill
@pytest.mark.parametrize("seed", [42, 43, 44, 45])
def test_more_seeds(seed: int, cdir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert_intact(run(seed, cdir, home))
