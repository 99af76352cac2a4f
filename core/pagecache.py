"""How much page cache a broker can count on: its read-redirect budget.

`budget = min(hot_ratio x memory_limit, memory available now)`, where the
memory limit is the cgroup's when the process runs under one (psutil alone
reports the whole machine) and total memory otherwise. Sampled at most every
`refresh_ms`; a pinned budget replaces the computation (operators, tests).
The cgroup parsing is plain functions over file text, so it is unit-tested
with v1 and v2 samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

UNLIMITED = 1 << 60  # cgroup v1 writes ~2^63 for "no limit"


def parse_v2_limit(text: str) -> int | None:
    """`memory.max`: a byte count or "max"."""
    value = text.strip()
    if value == "max" or not value:
        return None
    n = int(value)
    return None if n >= UNLIMITED else n


def parse_v1_limit(text: str) -> int | None:
    """`memory.limit_in_bytes`: a byte count, absurdly large when unlimited."""
    value = text.strip()
    if not value:
        return None
    n = int(value)
    return None if n >= UNLIMITED else n


def cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process from /proc/self/cgroup text."""
    v2: str | None = None
    v1: str | None = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    limit: int | None  # the tightest limit on this cgroup and its ancestors
    usage: int | None


def read_cgroup_memory(proc_self_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> CgroupMemory:
    """The memory limit and usage of this process's cgroup, v1 or v2."""
    v2, v1 = cgroup_paths(proc_self_cgroup)
    candidates: list[tuple[Path, Callable[[str], int | None], str]] = []
    if v1 is not None:
        candidates.append((root / "memory" / v1.lstrip("/"), parse_v1_limit, "memory.usage_in_bytes"))
        candidates.append((root / v1.lstrip("/"), parse_v1_limit, "memory.usage_in_bytes"))
    if v2 is not None:
        candidates.append((root / v2.lstrip("/"), parse_v2_limit, "memory.current"))
        candidates.append((root / "unified" / v2.lstrip("/"), parse_v2_limit, "memory.current"))
    for base, parse, usage_name in candidates:
        limit_name = "memory.max" if parse is parse_v2_limit else "memory.limit_in_bytes"
        if not (base / limit_name).exists():
            continue
        limits = []
        d = base
        while True:  # a limit on an ancestor binds too
            f = d / limit_name
            if f.exists():
                lim = parse(f.read_text())
                if lim is not None:
                    limits.append(lim)
            if d == root or d.parent == d or root not in d.parents:
                break
            d = d.parent
        usage = None
        u = base / usage_name
        if u.exists():
            usage = int(u.read_text().strip() or 0)
        return CgroupMemory(min(limits) if limits else None, usage)
    return CgroupMemory(None, None)


def compute_budget(hot_ratio: float, total: int, available: int, cgroup: CgroupMemory) -> int:
    """min(hot_ratio x limit, available now), limit and availability cgroup-aware."""
    limit = total
    if cgroup.limit is not None and cgroup.limit < total:
        limit = cgroup.limit
        if cgroup.usage is not None:
            available = min(available, max(0, cgroup.limit - cgroup.usage))
    return max(0, min(int(hot_ratio * limit), available))


class MemoryBudget:
    """The budget, pinned or sampled from psutil and the cgroup files."""

    def __init__(
        self,
        hot_ratio: float,
        pinned: int = 0,
        refresh_ms: int = 1000,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
    ) -> None:
        self.hot_ratio = hot_ratio
        self.pinned = pinned
        self.refresh_ms = refresh_ms
        self.clock_ms = clock_ms
        self._value = pinned
        self._at = -(1 << 62)
        self._lock = threading.Lock()

    def bytes(self) -> int:
        if self.pinned:
            return self.pinned
        now = self.clock_ms()
        with self._lock:
            if now - self._at >= self.refresh_ms:
                self._value = self.sample()
                self._at = now
            return self._value

    def sample(self) -> int:
        vm = psutil.virtual_memory()
        try:
            text = Path("/proc/self/cgroup").read_text()
            cg = read_cgroup_memory(text)
        except OSError:
            cg = CgroupMemory(None, None)
        return compute_budget(self.hot_ratio, vm.total, vm.available, cg)
