"""Run the `tailrace` command line as a child process (the way users run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def cli_json(*args: str, timeout: float = 120) -> dict[str, Any]:
    """A command run with --json: its last stdout line, parsed."""
    r = cli(*args, "--json", timeout=timeout)
    lines = r.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"no output (exit {r.returncode}): {r.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    """Whether a process (one a command started and left running) still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
