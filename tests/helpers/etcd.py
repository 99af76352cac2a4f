"""A real etcd cluster for tests: `local_etcd(tmp_path)` starts one and stops
it whatever happens; fails (never skips) when etcd is not installed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.etcd_cluster import EtcdTls, LocalEtcd, etcd_binary

NO_ETCD = "etcd is not installed (no /usr/bin/etcd): `make etcd` installs Debian's etcd-server"


@contextmanager
def local_etcd(
    tmp_path: Path, members: int = 3, tls: EtcdTls | None = None, timeout_s: float = 30.0
) -> Iterator[LocalEtcd]:
    if etcd_binary() is None:
        pytest.fail(NO_ETCD, pytrace=False)
    cluster = LocalEtcd(tmp_path / "etcd", members, tls=tls)
    try:
        cluster.start(timeout_s)
        yield cluster
    finally:
        cluster.stop()
