"""The redirect decision and the page-cache budget: numbers in, advice out."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pagecache import (
    CgroupMemory,
    MemoryBudget,
    cgroup_paths,
    compute_budget,
    parse_v1_limit,
    parse_v2_limit,
    read_cgroup_memory,
)
from core.redirect import (
    RedirectReason,
    SlaveView,
    advise_master,
    advise_slave,
    batch_limits,
)

pytestmark = pytest.mark.unit
GiB = 1 << 30
MiB = 1 << 20


def test_limit_parsing() -> None:
    assert parse_v2_limit("max\n") is None
    assert parse_v2_limit("536870912\n") == 512 * MiB
    assert parse_v1_limit("9223372036854771712\n") is None  # v1's "unlimited"
    assert parse_v1_limit("1073741824") == GiB


def test_cgroup_paths_v1_v2_and_hybrid() -> None:
    v2 = "0::/system.slice/broker.service\n"
    v1 = "12:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n"
    assert cgroup_paths(v2) == ("/system.slice/broker.service", None)
    assert cgroup_paths(v1) == ("/", "/process_api/abc")


def test_read_cgroup_v2_takes_the_tightest_ancestor(tmp_path: Path) -> None:
    leaf = tmp_path / "a" / "b"
    leaf.mkdir(parents=True)
    (tmp_path / "a" / "memory.max").write_text("268435456\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.current").write_text("100000000\n")
    mem = read_cgroup_memory("0::/a/b\n", root=tmp_path)
    assert mem == CgroupMemory(256 * MiB, 100_000_000)


def test_read_cgroup_v1(tmp_path: Path) -> None:
    d = tmp_path / "memory" / "grp"
    d.mkdir(parents=True)
    (d / "memory.limit_in_bytes").write_text("536870912\n")
    (d / "memory.usage_in_bytes").write_text("136870912\n")
    mem = read_cgroup_memory("4:memory:/grp\n0::/\n", root=tmp_path)
    assert mem == CgroupMemory(512 * MiB, 136_870_912)
    assert read_cgroup_memory("4:memory:/nowhere\n", root=tmp_path) == CgroupMemory(None, None)


def test_budget_uses_the_cgroup_limit_over_the_machines_memory() -> None:
    # the machine: 24 GiB, 20 GiB available; psutil alone would allow 9.6 GiB
    assert compute_budget(0.4, 24 * GiB, 20 * GiB, CgroupMemory(None, None)) == int(0.4 * 24 * GiB)
    # under a 1 GiB cgroup with 900 MiB used: only 124 MiB is really available
    assert compute_budget(0.4, 24 * GiB, 20 * GiB, CgroupMemory(GiB, 900 * MiB)) == 124 * MiB
    # under a 1 GiB cgroup, lightly used: 40% of the limit
    assert compute_budget(0.4, 24 * GiB, 20 * GiB, CgroupMemory(GiB, 10 * MiB)) == int(0.4 * GiB)
    # little memory available now caps it
    assert compute_budget(0.4, 24 * GiB, 100 * MiB, CgroupMemory(None, None)) == 100 * MiB


def test_budget_is_pinned_or_sampled_at_most_every_refresh() -> None:
    assert MemoryBudget(0.4, pinned=MiB).bytes() == MiB
    now = [0]
    b = MemoryBudget(0.4, refresh_ms=1000, clock_ms=lambda: now[0])
    calls = []
    b.sample = lambda: calls.append(1) or 5 * GiB  # type: ignore[method-assign]
    assert b.bytes() == 5 * GiB
    now[0] = 999
    b.bytes()
    assert len(calls) == 1
    now[0] = 1000
    b.bytes()
    assert len(calls) == 2


SLAVES = [SlaveView(1, True, True, 10_000), SlaveView(2, True, True, 10_000)]


def test_over_budget_suggests_an_eligible_slave_spread_by_key() -> None:
    a1, sent = advise_master(5 * MiB, MiB, False, 100, SLAVES, key=0, return_ratio=0.8)
    a2, _ = advise_master(5 * MiB, MiB, False, 100, SLAVES, key=1, return_ratio=0.8)
    assert sent and a1.reason == RedirectReason.OVER_BUDGET and a1.cold
    assert {a1.suggested_broker_id, a2.suggested_broker_id} == {1, 2}


def test_within_budget_stays_on_the_master_hot() -> None:
    a, sent = advise_master(MiB // 2, MiB, False, 100, SLAVES, key=0, return_ratio=0.8)
    assert (a.suggested_broker_id, a.cold, sent) == (-1, False, False)


def test_hysteresis_holds_until_below_return_ratio() -> None:
    # sent away at > 1 MiB; 0.9 MiB is still not below 0.8 MiB: stays sent away
    a, sent = advise_master(int(0.9 * MiB), MiB, True, 100, SLAVES, key=0, return_ratio=0.8)
    assert sent and a.suggested_broker_id in (1, 2)
    a, sent = advise_master(int(0.7 * MiB), MiB, True, 100, SLAVES, key=0, return_ratio=0.8)
    assert not sent and a.reason == RedirectReason.CAUGHT_UP and not a.cold


def test_only_alive_in_sync_slaves_past_the_offset_qualify() -> None:
    behind = [
        SlaveView(1, True, True, 50),
        SlaveView(2, False, True, 10_000),
        SlaveView(3, True, False, 10_000),
    ]
    a, _ = advise_master(5 * MiB, MiB, False, 100, behind, key=0, return_ratio=0.8)
    assert (a.suggested_broker_id, a.reason, a.cold) == (-1, RedirectReason.REPLICA_BEHIND, True)
    a, _ = advise_master(5 * MiB, MiB, False, 100, [], key=0, return_ratio=0.8)
    assert a.reason == RedirectReason.NO_SLAVE


def test_slave_hands_back_when_caught_up_or_at_its_end() -> None:
    assert advise_slave(5 * MiB, MiB, 0.8, at_end=False).suggested_broker_id == -1
    assert advise_slave(MiB // 2, MiB, 0.8, at_end=False).reason == RedirectReason.CAUGHT_UP
    assert advise_slave(5 * MiB, MiB, 0.8, at_end=True).reason == RedirectReason.SLAVE_END


def test_hot_and_cold_batch_limits() -> None:
    hot, cold = (32, 256 * 1024), (8, 64 * 1024)
    assert batch_limits(False, 0, 0, hot, cold) == (32, 256 * 1024)
    assert batch_limits(True, 0, 0, hot, cold) == (8, 64 * 1024)
    assert batch_limits(False, 10, 1 << 30, hot, cold) == (10, 256 * 1024)
