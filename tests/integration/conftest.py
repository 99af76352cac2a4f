"""Fixtures for tests that run real broker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.harness import ProcessGroup, process_group


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """A ProcessGroup in a temp dir: every process it started is stopped at the
    end, and their logs are printed if the test failed."""
    with process_group(tmp_path / "run") as group:
        yield group
