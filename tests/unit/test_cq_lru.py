"""The bound on mapped ConsumeQueues (cqcache.OpenSet): least recently used
idle queues are unmapped first, pinned ones never; counted with fakes, then
on a real ConsumeQueueSet."""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from pathlib import Path

import pytest

from core.store.cqcache import Mappable, OpenSet
from core.store.cqset import ConsumeQueueSet

pytestmark = pytest.mark.unit


class FakeQueue(Mappable):
    """Counts its maps and unmaps. `users` counts those whose pin has returned
    (they touch the files now): a pin still waiting for the queue's io_lock
    does not count, and maps the queue again once it gets it."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(key)
        self.mapped = True  # admitted mapped, as a loaded queue is
        self.maps = 0
        self.unmaps = 0
        self.users = 0

    def _map(self) -> None:
        assert not self.mapped
        self.mapped = True
        self.maps += 1

    def _unmap(self) -> None:
        assert self.mapped and self.users == 0, "unmapped while in use"
        self.mapped = False
        self.unmaps += 1


def take(s: OpenSet[FakeQueue], q: FakeQueue) -> None:
    s.pin(q)
    assert q.mapped
    q.users += 1


def release(s: OpenSet[FakeQueue], q: FakeQueue) -> None:
    q.users -= 1
    s.unpin(q)


def use(s: OpenSet[FakeQueue], q: FakeQueue) -> None:
    take(s, q)
    release(s, q)


def test_least_recently_used_idle_queue_is_unmapped_first() -> None:
    s: OpenSet[FakeQueue] = OpenSet(3)
    qs = [FakeQueue(i) for i in range(4)]
    for q in qs[:3]:
        s.admit(q)
    assert s.keys() == [0, 1, 2] and s.unmaps == 0
    use(s, qs[0])  # 0 becomes the most recent: 1 is now the oldest
    s.admit(qs[3])
    assert s.keys() == [2, 0, 3] and qs[1].unmaps == 1 and not qs[1].mapped
    use(s, qs[1])  # maps 1 again, unmapping the oldest (2)
    assert s.keys() == [0, 3, 1] and qs[1].maps == 1 and qs[2].unmaps == 1
    assert (s.maps, s.unmaps) == (5, 2)
    assert len(s) == 3 and sum(q.mapped for q in qs) == 3


def test_a_pinned_queue_is_never_unmapped_and_the_bound_returns_after() -> None:
    s: OpenSet[FakeQueue] = OpenSet(2)
    a, b, c, d = (FakeQueue(k) for k in "abcd")
    s.admit(a)
    take(s, a)  # a read in progress on the least recently used queue
    s.admit(b)
    s.admit(c)  # over the cap: b goes, not a
    assert a.mapped and not b.mapped and s.keys() == ["a", "c"]
    take(s, c)
    s.admit(d)  # everything else pinned: over the cap rather than close a user's maps
    assert a.mapped and c.mapped and d.mapped and len(s) == 3
    release(s, a)
    release(s, c)
    use(s, b)  # the next map brings the count back to the cap, oldest idle first
    assert s.keys() == ["d", "b"] and not a.mapped and not c.mapped
    assert a.unmaps == c.unmaps == 1 and d.unmaps == 0


def test_a_pin_arriving_while_a_victim_is_chosen_keeps_its_maps() -> None:
    s: OpenSet[FakeQueue] = OpenSet(1)
    a, b = FakeQueue("a"), FakeQueue("b")
    s.admit(a)
    # b's admission chooses a; hold a's io_lock so the close waits, then pin a meanwhile
    with a.io_lock:
        t = threading.Thread(target=s.admit, args=(b,))
        t.start()
        while not a.closing:
            pass
        pinner = threading.Thread(target=take, args=(s, a))
        pinner.start()
        while a.pins == 0:
            pass
    t.join()
    pinner.join()
    # either the close ran first and the pin mapped a again, or the pin cancelled it
    assert a.mapped and a.users == 1 and a.maps == a.unmaps
    release(s, a)


def test_a_queue_set_maps_at_most_its_cap_and_reads_every_queue(tmp_path: Path) -> None:
    cqs = ConsumeQueueSet(tmp_path / "cq", 100, max_open=4)
    for q in range(10):
        cqs.dispatch([("t", q, 0, q * 1000, 50, q)])
        assert cqs.mapped_count() <= 4
    assert cqs.open_keys() == [("t", 6), ("t", 7), ("t", 8), ("t", 9)]
    unmapped = cqs.queues[("t", 0)]
    assert not unmapped.mapped and unmapped.max_offset == 1  # offsets stay known
    cqs.flush()
    cqs.close()

    cqs = ConsumeQueueSet(tmp_path / "cq", 100, max_open=4)
    assert cqs.count() == 10 and cqs.mapped_count() == 0 and cqs.queues == {}
    for q in reversed(range(10)):
        cq = cqs.get("t", q)
        assert cq is not None and (cq.min_offset, cq.max_offset) == (0, 1)
        assert cq.entry(0) == (q * 1000, 50, q)
    assert cqs.mapped_count() == 4 and cqs._open.unmaps == 6
    cqs.close()


def test_a_queue_unmapped_with_unsynced_entries_is_synced_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmapping does not sync (off the writer's thread); the checkpoint's
    flush must still make the unmapped queue's entries durable."""
    synced: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    cqs = ConsumeQueueSet(tmp_path / "cq", 100, max_open=1)
    cqs.dispatch([("t", 0, 0, 0, 50, 0)])
    cqs.dispatch([("t", 1, 0, 50, 50, 0)])  # unmaps t/0, written and not synced
    q0 = cqs.queues[("t", 0)]
    assert not q0.mapped and q0.dirty and synced == []
    cqs.flush()
    assert synced == [str(tmp_path / "cq" / "t" / "0" / f"{0:020d}")]
    assert not q0.dirty and not q0.mapped  # synced through its path, not mapped again
    cqs.flush()
    assert len(synced) == 1  # nothing new: no second sync
    cqs.close()
