"""The bodies of a cold pop (consumer/cold_reads.py): references in, messages
out, over a fake pull: runs, the master for what the slave cannot serve, a
tag re-checked, nothing lost or doubled."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.cold_reads import Fetched, fetch_bodies, runs
from core.errors import BrokerUnavailableError, RequestTimeoutError
from core.pop.ops import PoppedElsewhere
from core.subscription import Subscription
from tests.helpers.records import make

pytestmark = pytest.mark.unit
ALL = Subscription.parse("*")
T = "orders"  # the topic of every record `make` makes
PHYS = 1 << 40  # and their CommitLog offset


class Brokers:
    """Each broker id holds records of queues 0 and 1 up to some offset;
    a broker id in `down` raises. Every pull is noted."""

    def __init__(
        self, holds: dict[int, int], down: frozenset[int] = frozenset(), per_pull: int = 1000
    ) -> None:
        self.holds = holds
        self.down = down
        self.per_pull = per_pull
        self.pulls: list[tuple[int, int, int, int]] = []

    def record(self, queue: int, offset: int) -> bytes:
        return make(
            queue_id=queue, queue_offset=offset, body=f"{queue}:{offset}".encode(), tags=f"t{offset % 3}"
        )

    def pull(self, broker: int, queue: int, offset: int, count: int, nbytes: int, timeout: float) -> bytes:
        self.pulls.append((broker, queue, offset, count))
        if broker in self.down:
            raise BrokerUnavailableError("down")
        end = min(self.holds.get(broker, 0), offset + min(count, self.per_pull))
        return b"".join(self.record(queue, o) for o in range(offset, end))


def ref(queue: int, offset: int, read_from: int = 1, brokers: Brokers | None = None) -> PoppedElsewhere:
    size = len((brokers or Brokers({})).record(queue, offset))
    return PoppedElsewhere(queue, offset, size, read_from, 1, f"h{queue}.{offset}", 0, PHYS)


def fetch(
    refs: list[PoppedElsewhere], b: Brokers, sub: Subscription = ALL, clock: Callable[[], float] = lambda: 0.0
) -> Fetched:
    return fetch_bodies(refs, b.pull, sub, 10.0, clock, T)


def bodies(f: Fetched) -> list[bytes]:
    return [m.record.body for m in f.messages]


def test_runs_are_contiguous_offsets_of_one_queue_and_broker() -> None:
    refs = [ref(0, 5), ref(0, 3), ref(0, 4), ref(1, 6), ref(0, 7), ref(0, 8, read_from=2)]
    assert [[(r.queue_id, r.queue_offset) for r in run] for run in runs(refs)] == [
        [(0, 3), (0, 4), (0, 5)],
        [(0, 7)],
        [(1, 6)],
        [(0, 8)],
    ]


def test_one_pull_per_run_from_the_named_slave() -> None:
    b = Brokers({1: 100})
    refs = [ref(0, o) for o in (3, 4, 5)] + [ref(1, 9)]
    f = fetch(refs, b)
    assert bodies(f) == [b"0:3", b"0:4", b"0:5", b"1:9"]
    assert [m.handle for m in f.messages] == [r.handle for r in refs]
    assert b.pulls == [(1, 0, 3, 3), (1, 1, 9, 1)]
    assert f.served_by == {1: 4} and f.fallbacks == 0 and not f.missing


def test_a_run_cut_short_by_the_brokers_batch_limit_is_pulled_on() -> None:
    b = Brokers({1: 100}, per_pull=2)
    f = fetch([ref(0, o) for o in range(5)], b)
    assert bodies(f) == [f"0:{o}".encode() for o in range(5)]
    assert [p[2] for p in b.pulls] == [0, 2, 4]


def test_what_a_lagging_slave_lacks_comes_from_the_master() -> None:
    b = Brokers({1: 2, 0: 100})
    f = fetch([ref(0, o) for o in range(4)], b)
    assert bodies(f) == [b"0:0", b"0:1", b"0:2", b"0:3"]  # once each, in order
    assert f.served_by == {1: 2, 0: 2} and f.fallbacks == 1
    assert b.pulls[-1] == (0, 0, 2, 2)  # the master from where the slave stopped


def test_a_slave_down_sends_the_whole_run_to_the_master() -> None:
    b = Brokers({0: 100}, down=frozenset({1}))
    f = fetch([ref(0, 0), ref(0, 1)], b)
    assert bodies(f) == [b"0:0", b"0:1"] and f.served_by == {0: 2}
    assert isinstance(f.errors[0], BrokerUnavailableError)


def test_what_no_broker_serves_is_missing_not_dropped() -> None:
    b = Brokers({1: 1, 0: 1}, down=frozenset())
    refs = [ref(0, 0), ref(0, 1)]
    f = fetch(refs, b)
    assert bodies(f) == [b"0:0"] and f.missing == [refs[1]]


def test_a_record_other_than_the_one_referenced_is_not_taken() -> None:
    b = Brokers({1: 100, 0: 100})
    wrong = ref(0, 1)
    wrong = PoppedElsewhere(0, 1, wrong.size + 1, 1, 1, "h", 0, PHYS)  # not that record's size
    f = fetch([ref(0, 0), wrong], b)
    assert bodies(f) == [b"0:0"] and f.missing == [wrong]  # the master's is not it either


def test_a_tag_hash_collision_is_returned_for_an_ack() -> None:
    b = Brokers({1: 100})
    f = fetch([ref(0, o) for o in range(3)], b, Subscription.parse("t1"))
    assert bodies(f) == [b"0:1"]
    assert [m.record.body for m in f.mismatched] == [b"0:0", b"0:2"]


def test_no_pull_once_the_callers_time_is_spent() -> None:
    b = Brokers({1: 100})
    f = fetch([ref(0, 0)], b, clock=lambda: 10.0)
    assert b.pulls == [] and len(f.missing) == 1


class Hanging(Brokers):
    """Broker 1 does not answer: each pull to it lasts its whole timeout on
    the fake clock, then fails as a gRPC deadline does."""

    def __init__(self) -> None:
        super().__init__({0: 100})
        self.now = 0.0
        self.timeouts: list[tuple[int, float]] = []

    def pull(self, broker: int, queue: int, offset: int, count: int, nbytes: int, timeout: float) -> bytes:
        self.timeouts.append((broker, round(timeout, 2)))
        if broker == 1:
            self.now += timeout
            raise RequestTimeoutError("deadline exceeded")
        return super().pull(broker, queue, offset, count, nbytes, timeout)


def test_a_hung_slave_gets_a_share_of_the_time_and_the_master_the_rest() -> None:
    b = Hanging()
    refs = [ref(0, o) for o in range(4)] + [ref(1, 7)]  # two runs of the hung slave
    f = fetch_bodies(refs, b.pull, ALL, 10.0, lambda: b.now, T)
    assert bodies(f) == [b"0:0", b"0:1", b"0:2", b"0:3", b"1:7"] and not f.missing
    # the slave once (its share: 1 s of 10), not again for the second run; the master the rest
    assert b.timeouts == [(1, 1.0), (0, 9.0), (0, 9.0)]
    assert f.failed == {1} and f.served_by == {0: 5} and f.fallbacks == 2


def test_with_little_time_the_slave_gets_half_of_it() -> None:
    b = Hanging()
    f = fetch_bodies([ref(0, 0)], b.pull, ALL, 0.6, lambda: b.now, T)
    assert b.timeouts == [(1, 0.3), (0, 0.3)] and bodies(f) == [b"0:0"]


class Diverged(Brokers):
    """The slave holds, where the referenced record is, another record of
    the same size: another CommitLog offset (a slave that took a new
    master's tail after a failover) or another topic's."""

    def __init__(self, phys: int = PHYS, topic: str = T) -> None:
        super().__init__({1: 100, 0: 100})
        self.phys, self.topic = phys, topic

    def other(self, queue: int, o: int) -> bytes:
        body = f"X:{o}".encode()
        return make(
            topic=self.topic, queue_id=queue, queue_offset=o, phys=self.phys, body=body, tags=f"t{o % 3}"
        )

    def pull(self, broker: int, queue: int, offset: int, count: int, nbytes: int, timeout: float) -> bytes:
        if broker == 0:
            return super().pull(broker, queue, offset, count, nbytes, timeout)
        self.pulls.append((broker, queue, offset, count))
        return b"".join(self.other(queue, o) for o in range(offset, offset + count))


@pytest.mark.parametrize(
    "slave", [Diverged(phys=PHYS + 4096), Diverged(topic="ordery")], ids=["phys", "topic"]
)
def test_a_same_size_record_other_than_the_one_handed_out_is_refused(slave: Diverged) -> None:
    refs = [ref(0, 0), ref(0, 1)]
    assert len(slave.other(0, 0)) == refs[0].size  # the slave's record has the referenced size
    f = fetch(refs, slave)
    assert bodies(f) == [b"0:0", b"0:1"]  # the master's, not the slave's
    assert f.served_by[1] == 0 and f.served_by[0] == 2 and f.failed == {1} and slave.pulls[-1] == (0, 0, 0, 2)
