"""One leader role on a store in a temp dir for the pop tests
(tests/unit/test_pop_master.py, test_pop_durability.py): its pops under a
fake clock, its revive pass run by hand; and the pop table compared as
plain values."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.pop.ops import PopResult
from core.pop.state import PopTable
from core.record import Message, iter_records
from core.roles import SendStatus
from core.store import MessageStore, StoreConfig
from master.popper import Popper
from tests.helpers.leader_core import LeaderBroker, close_core, open_core

T, G = "orders", "g"
RETRY_DELAYS = "1s 5s 2h"


@dataclass
class Broker(LeaderBroker):
    clock: list[int]

    @property
    def popper(self) -> Popper:
        p = self.leader.popper
        p.clock = lambda: self.clock[0]
        return p

    def send(self, *bodies: bytes, queue: int = 0) -> None:
        out = self.leader.send(T, queue, [Message(T, queue, b) for b in bodies])
        assert out.status is SendStatus.SEND_OK

    def pop(self, n: int = 32, inv: int = 10_000, queue: int = 0, group: str = G) -> PopResult:
        return self.popper.pop(group, T, queue, n, inv)

    def bodies(self, topic: str) -> list[bytes]:
        read = self.core.store.read(topic, 0, 0, 1000, 1 << 20)
        return [r.body for r in iter_records(read.data, verify=False)]


def start(path: Path, config: StoreConfig, clock: list[int], **overrides: Any) -> Broker:
    core = open_core(path, config, lambda: clock[0], broker__retry_delays=RETRY_DELAYS, **overrides)
    return Broker(core, clock)


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path, small_config: StoreConfig) -> Iterator[Broker]:
    b = start(tmp_path, small_config, [int(time.time() * 1000)], broker__pop_max_attempts=3)
    try:
        b.leader.create_topic(T, 2)
        yield b
    finally:
        close_core(b.core)


def snapshot(t: PopTable) -> dict[Any, Any]:
    out = {}
    for k in t.queues():
        q = t.get(k)
        assert q is not None
        out[k] = (q.cursor, q.next_gen, dict(q.inflight))
    return out


def assert_a_copy_has_the_same_pops(broker: Broker, copy: MessageStore) -> None:
    """A slave's view: the broker's log replicated into `copy` (closed after)
    rebuilds the same pop table."""
    table = PopTable()
    copy.add_system_handler("pop", table.on_record)
    try:
        src, off = broker.core.store, 0
        while off < src.commitlog.max_offset:
            data, nxt = src.read_log(off, 1 << 20)
            copy.append_replicated(off, data)
            off = nxt
        assert snapshot(table) == snapshot(broker.core.pops)
    finally:
        copy.close()
