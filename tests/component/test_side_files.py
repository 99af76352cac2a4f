"""Side files (topics.json, offsets.json, epochs.json): written whole or not
at all, and a write that fails is reported, never acknowledged (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.cli import ROOT

pytestmark = pytest.mark.component


def test_a_file_size_limit_leaves_a_valid_topics_json_and_no_temp_file(tmp_path: Path) -> None:
    """The issue's case: under a 300-byte file-size limit (RLIMIT_FSIZE, in a
    child process) a topic table that grows past 300 bytes cannot be written;
    the old topics.json must stay valid and no *.tmp may be left."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from core.store.topics import TopicTable
        table = TopicTable(Path({str(tmp_path)!r}), 64)
        table.create("first", 4)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
        try:
            for i in range(20):
                table.create(f"topic-with-a-long-name-{{i}}", 8)
        except OSError as exc:
            print("refused:", exc.errno)
            sys.exit(0)
        sys.exit("every write was accepted")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("refused:")
    table = json.loads((tmp_path / "topics.json").read_text())  # still valid JSON
    assert len(json.dumps(table, indent=1)) <= 300 and "first" in table["topics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topics.json"]
