"""Failover drills on real clusters (`tailrace drill`), fast timings: a 1 s
lease, 100 ms controller heartbeats. Each drill checks its own logs
(deploy/drill_check.py); here we also hold it to the numbers that matter.

kill-master, pause-master and kill-slave run in CI (about 15 s each); the
other three are marked `drill` (make drills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.drill import DrillOptions, run_drill
from deploy.topology import resolve_topology

pytestmark = pytest.mark.integration


def drill(name: str, tmp_path: Path, seed: int) -> dict[str, Any]:
    report = run_drill(
        DrillOptions(name, resolve_topology("local-failover"), seed, duration_s=8, rate=2000, fast=True,
                     workdir=tmp_path / name, log=print)
    )  # fmt: skip
    print(report)
    assert report["violations"] == [], report["violations"]
    assert report["lost"] == 0
    assert report["acknowledged"] >= 0.9 * report["attempted"] > 0
    # stored but not confirmed (SLAVE_TIMEOUT, reported to the producer) may be consumed too
    assert report["consumed"] >= report["acknowledged"]
    return report


def test_kill_master(tmp_path: Path) -> None:
    r = drill("kill-master", tmp_path, seed=11)
    assert r["epochs"][1] > r["epochs"][0]
    assert r["failover_time_s"] is not None and r["failover_time_s"] <= 3.0
    assert len(r["masters_per_epoch"]) >= 2  # writes acknowledged in both epochs


def test_pause_master_comes_back_fenced(tmp_path: Path) -> None:
    r = drill("pause-master", tmp_path, seed=12)
    assert r["epochs"][1] > r["epochs"][0]
    assert "broker-a is a slave" in r["events"]
    assert all(len(a) == 1 for a in r["masters_per_epoch"].values())


def test_kill_slave_needs_no_failover(tmp_path: Path) -> None:
    r = drill("kill-slave", tmp_path, seed=13)
    assert r["epochs"][1] == r["epochs"][0]
    assert r["failover_time_s"] is None


@pytest.mark.drill
@pytest.mark.parametrize("name", ["partition-master", "restart-all", "rolling-restart"])
def test_more_drills(name: str, tmp_path: Path) -> None:
    r = drill(name, tmp_path, seed=14)
    assert r["epochs"][1] > r["epochs"][0]
