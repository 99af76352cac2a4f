"""The import direction between the top-level packages, read from the source.

core/ is the library everything else builds on; master/ and slave/ are the two
roles and never import each other or the nameserver; deploy/ wires processes
and does not reach into bench/ (bench registers its own subcommands).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "master", "slave", "nameserver", "consumer", "deploy", "bench")
FORBIDDEN: dict[str, set[str]] = {
    "core": {"master", "slave", "nameserver", "consumer", "deploy", "bench"},
    "master": {"slave", "nameserver", "consumer", "deploy", "bench"},
    "slave": {"master", "nameserver", "consumer", "deploy", "bench"},
    "nameserver": {"master", "slave", "consumer", "deploy", "bench"},
    "consumer": {"master", "slave", "nameserver", "deploy", "bench"},
    "deploy": {"bench"},
}
MAX_LINES = 500


def imports_of(path: Path) -> set[str]:
    """Top-level packages a module imports (also inside functions and TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "pb" not in p.relative_to(ROOT).parts)


def violations() -> list[str]:
    out = []
    for package, banned in FORBIDDEN.items():
        for path in sources(package):
            for name in sorted(imports_of(path) & banned):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_import_direction() -> None:
    found = violations()
    print("\n".join(["import check:", *(found or ["no violations"])]))
    assert found == []


def test_the_check_sees_imports_anywhere_in_a_module(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from master.leader import X\n"
        "def f():\n    import bench.store_bench\n    from core import errors\n"
    )
    assert imports_of(mod) == {"typing", "master", "bench", "core"}


def test_no_module_past_the_size_limit() -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for package in PACKAGES
        for p in sources(package)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert big == [], "a module past ~500 lines has two jobs: split it along the seam"


def test_the_client_library_never_loads_the_store() -> None:
    """consumer/ may use core's pure modules (codec, errors, routes, statuses),
    never the storage engine, not even through another import."""
    code = (
        "import sys, consumer, consumer.aio, consumer.push_consumer; "
        "print(sorted(m for m in sys.modules if m.startswith('core.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout.strip())
    assert loaded and not [m for m in loaded if m.startswith(("core.store", "core.broker"))], loaded
