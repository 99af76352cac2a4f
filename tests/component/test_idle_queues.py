"""Issue 16, "idle queues are cheap": 10,000 queues of one message each cost
little disk and few descriptors, and the store reopens with them (cleanly and
after a kill) reading cold queues right."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.store import MessageStore, StoreConfig
from tests.helpers.idle_queues import (
    DISK_PER_QUEUE,
    FD_SLACK,
    OPEN_CQ_DEFAULT,
    QUEUES_PER_TOPIC,
    TOPICS,
    build,
    check_reads,
    disk_bytes,
    open_fds,
    sample_keys,
)
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.component

CONFIG = StoreConfig(segment_bytes=64 * 1024 * 1024, warm_segments=False)
QUEUES = TOPICS * QUEUES_PER_TOPIC


def test_ten_thousand_idle_queues_cost_little_and_reopen(tmp_path: Path) -> None:
    data = tmp_path / "d"
    base = open_fds()
    s = MessageStore(data, CONFIG)
    build(s, base)
    s.flush()
    used = disk_bytes(data / "consumequeue")
    assert used <= QUEUES * DISK_PER_QUEUE, f"{used / 2**20:.1f} MiB for {QUEUES} queues"
    assert open_fds() - base <= OPEN_CQ_DEFAULT + FD_SLACK
    s.close()
    assert open_fds() <= base  # nothing left open (the process may have closed others meanwhile)

    # A clean reopen maps no ConsumeQueue: each is opened when first read.
    s = MessageStore(data, CONFIG)
    assert open_fds() - base <= FD_SLACK
    check_reads(s, sample_keys())
    assert open_fds() - base <= FD_SLACK + len(sample_keys())

    # After a kill: recovery leaves the queues it did not scan closed too.
    abandon(s)
    s = MessageStore(data, CONFIG)
    assert not s.recovery.clean
    assert open_fds() - base <= FD_SLACK
    check_reads(s, sample_keys()[::-1])
    # Reading every queue maps at most the cap at any time.
    assert check_consistency(s) == QUEUES
    assert open_fds() - base <= OPEN_CQ_DEFAULT + FD_SLACK
    s.close()
    assert disk_bytes(data / "consumequeue") == used
