"""Memory cgroups for benchmarks: give brokers their own page cache on one machine.

Creates a child of this process's memory cgroup (v1 `memory.limit_in_bytes`
or v2 `memory.max`), and an exec prefix that starts a process inside it.
Returns None where cgroups cannot be created (no permission, no controller),
so callers can skip with a clear message.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from core.pagecache import cgroup_paths

ROOT = Path("/sys/fs/cgroup")


@dataclass
class MemoryCgroup:
    path: Path
    version: int

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryCgroup | None:
        v2, v1 = cgroup_paths(Path("/proc/self/cgroup").read_text())
        candidates: list[tuple[Path, int, str]] = []
        if v1 is not None:
            candidates.append((ROOT / "memory" / v1.lstrip("/"), 1, "memory.limit_in_bytes"))
        if v2 is not None:
            candidates.append((ROOT / v2.lstrip("/"), 2, "memory.max"))
        for parent, version, limit_file in candidates:
            if not (parent / limit_file).exists() and not (parent / "cgroup.controllers").exists():
                continue
            path = parent / name
            try:
                path.mkdir(exist_ok=True)
                (path / limit_file).write_text(str(limit_bytes))
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            return cls(path, version)
        return None

    @property
    def exec_prefix(self) -> list[str]:
        """Run a command inside this cgroup: the shell joins it, then execs."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path)]

    def usage(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text().strip() or 0)

    def drop_cache(self) -> int:
        """Evict what this cgroup holds of the page cache, its processes'
        mapped and touched file pages included (v1 `memory.force_empty`, v2
        `memory.reclaim`); the bytes freed. Benchmarks call it so every arm
        starts from the same residency without dropping the whole machine's
        cache (`drop_caches` is global, and needs root)."""
        before = self.usage()
        name, value = ("memory.force_empty", "0") if self.version == 1 else ("memory.reclaim", str(before))
        with contextlib.suppress(OSError):  # (v2: EAGAIN when not all of it could be reclaimed)
            (self.path / name).write_text(value)
        return max(0, before - self.usage())

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def process_read_bytes(pid: int) -> int:
    """Bytes a process made the kernel read from storage (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0
