"""Shared fixtures: small-segment stores in temp dirs, closed after each test;
real 3-member etcd clusters (`etcd3`, `etcd3_module`), stopped whatever happens."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.store import MessageStore, StoreConfig
from deploy.etcd_cluster import LocalEtcd
from tests.fuzz import profiles  # noqa: F401  (hypothesis profiles, before --hypothesis-profile is read)
from tests.helpers.etcd import local_etcd

SMALL = StoreConfig(
    segment_bytes=64 * 1024,
    max_message_bytes=16 * 1024,
    cq_entries_per_file=64,
    flush_interval_ms=50,
    checkpoint_interval_ms=100,
    warm_segments=True,
)


@pytest.fixture(autouse=True)
def _no_client_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients in tests never pick up the developer's profile ($TAILRACE_PROFILE)."""
    monkeypatch.delenv("TAILRACE_PROFILE", raising=False)


@pytest.fixture
def small_config() -> StoreConfig:
    return SMALL


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., MessageStore]]:
    """open_store(dir=None, **config overrides) -> an open MessageStore.

    Every store it opened is closed at teardown (a test that wants an unclean
    stop calls `abandon(store)` instead of close).
    """
    opened: list[MessageStore] = []

    def _open(directory: Path | None = None, **overrides: Any) -> MessageStore:
        store = MessageStore(directory or tmp_path / "store", replace(SMALL, **overrides))
        opened.append(store)
        return store

    yield _open
    for s in opened:
        with contextlib.suppress(Exception):
            s.close()


@pytest.fixture
def seed() -> int:
    """A seed for randomised tests, printed so a failure can be replayed
    (TAILRACE_SEED=N pytest ...)."""
    value = int(os.environ.get("TAILRACE_SEED", random.randrange(1 << 31)))
    print(f"seed={value} (replay with TAILRACE_SEED={value})")
    return value


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[LocalEtcd]:
    """A fresh 3-member etcd cluster for one test (kill it at will), stopped
    whatever happens."""
    with local_etcd(tmp_path) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def etcd3_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    """A 3-member etcd cluster shared by a module's tests: they must leave it
    whole (no kills) and use keys of their own."""
    with local_etcd(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster
