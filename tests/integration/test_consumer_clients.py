"""The consumer's behaviour that matters, against real brokers, for both
clients: the threaded `PullConsumer` and the asyncio `AsyncPullConsumer`
(one fetcher, consumer/fetcher.py; these check each one's I/O drives it)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest

from consumer import Admin, Producer, PullConsumer
from consumer.aio import AsyncPullConsumer
from consumer.fetcher import ReceivedMessage
from deploy.harness import ProcessGroup
from tests.integration.test_redirect import backlog, cluster

pytestmark = pytest.mark.integration
CLIENTS = ["threads", "asyncio"]


class Reader:
    """`read(n)` returns the next n messages (up to a deadline), with either client."""

    def __init__(self, kind: str, **kw: Any) -> None:
        self.kind = kind
        self.kw = kw
        self.loop: asyncio.AbstractEventLoop | None = None
        self.c: Any = None

    def __enter__(self) -> Reader:
        if self.kind == "threads":
            self.c = PullConsumer(**self.kw)
        else:
            self.loop = asyncio.new_event_loop()
            try:
                self.c = self.loop.run_until_complete(AsyncPullConsumer(**self.kw).start())
            except BaseException:
                self.loop.close()
                raise
        return self

    def poll(self, ms: int) -> list[ReceivedMessage]:
        if self.loop is None:
            return list(self.c.poll(ms))
        return list(self.loop.run_until_complete(self.c.poll(ms)))

    def read(self, n: int, timeout_s: float = 60) -> list[ReceivedMessage]:
        out: list[ReceivedMessage] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            assert time.monotonic() < deadline, f"read only {len(out)} of {n}"
            out.extend(self.poll(200))
        return out

    @property
    def served_by(self) -> dict[int, int]:
        return dict(self.c.served_by)

    def __exit__(self, *exc: object) -> None:
        if self.loop is None:
            self.c.close()
        else:
            try:
                self.loop.run_until_complete(self.c.close())
            finally:
                self.loop.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_cold_reader_follows_the_redirect_to_a_slave_and_back(kind: str, procs: ProcessGroup) -> None:
    ns, m, slaves = cluster(procs)
    backlog(m, slaves, 4096)  # about 9 MiB behind, against a 1 MiB budget
    with Reader(kind, namesrv=ns, group="cold", topic="B", heartbeat_ms=200, max_messages=256) as r:
        got = r.read(2 * 4096)
        per_queue: dict[int, list[int]] = defaultdict(list)
        for msg in got:
            per_queue[msg.queue_id].append(msg.queue_offset)
        assert all(offsets == list(range(4096)) for offsets in per_queue.values()), "once, in order"
        assert r.served_by.get(1, 0) + r.served_by.get(2, 0) > 4096  # most of it from the slaves
        before = r.served_by.get(0, 0)
        backlog(m, slaves, 256, start=4096)  # caught up: new messages come from the master again
        r.read(2 * 256)
        assert r.served_by.get(0, 0) - before == 512


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_next_member_starts_at_the_commit_and_skips_nothing(kind: str, procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("T", 2)
    with Producer(b.address) as prod:
        for q in (0, 1):
            for i in range(0, 1000, 100):
                prod.send_batch("T", [f"{q}:{j}".encode() for j in range(i, i + 100)], queue_id=q)
    kw = {"broker": b.address, "group": "g", "topic": "T", "heartbeat_ms": 200, "max_messages": 64}
    with Reader(kind, **kw) as first:
        early = first.read(700)
    last = {q: max(msg.queue_offset for msg in early if msg.queue_id == q) for q in (0, 1)}
    with Admin(b.address) as admin:  # close() committed exactly what was polled
        assert [admin.query_offset("g", "T", q) for q in (0, 1)] == [last[0] + 1, last[1] + 1]
    with Reader(kind, **kw) as second:
        late = second.read(2000 - len(early))
    for q in (0, 1):
        offsets = sorted(msg.queue_offset for msg in [*early, *late] if msg.queue_id == q)
        assert offsets == list(range(1000)), f"queue {q}: a gap or a duplicate"
        assert min(msg.queue_offset for msg in late if msg.queue_id == q) == last[q] + 1
