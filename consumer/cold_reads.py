"""The bodies of a cold pop, read from a slave (issue 18).

A master asked with `bodies_elsewhere` pops a cold queue from its
ConsumeQueue alone and answers where each message is (`PoppedElsewhere`:
queue, offset, size, the broker id to read from) instead of its bytes. The
pop is recorded by then: every one of those messages is handed out, and the
caller must deliver it, ack it, or give it back, never drop it. This module
turns the references into messages:

- contiguous offsets of one queue and one broker make a run, read with one
  native Pull at its first offset (more while the broker's batch limits cut
  it short);
- what the named broker cannot serve (not holding it yet, RETRY_ELSEWHERE,
  down, a record that is not the one referenced: its topic, queue, offset,
  CommitLog offset and size are checked, and its CRC) is read from the master
  (broker id 0), once per run, from where the slave stopped;
- the slaves get a bounded share of the caller's time (`SLAVE_SHARE_S`, at
  most half of what is left), the master the rest: a slave that hangs or
  whose packets are dropped costs that share, not the whole call, and a
  slave that failed is not asked again within the same fetch (`failed`:
  the caller keeps it out for a while, consumer/pop_client.py);
- a record whose exact tag the subscription does not match (the master
  filtered by tag hash: a collision) is returned apart, for the caller to
  ack at once (consumed, as the master does with what it filters out);
- what neither could serve is returned apart too, for the caller to give
  back (its handle is live: it comes back after its invisibility anyway).

`fetch_bodies` takes the pull as a function, so it is tested without a
broker; `RoutedPull` is that function over a topic's route and the
caller's connections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.connection import ConnectionPool
from consumer.routing import Routes
from core.errors import BrokerUnavailableError, CorruptRecordError, TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pop.ops import PoppedElsewhere, PoppedMessage
from core.record import Record, iter_records
from core.route import MASTER_ID
from core.subscription import Subscription

MIN_CALL_S = 0.05
SLAVE_SHARE_S = 1.0  # the slaves' reads of one fetch end this soon (or half the time left), the master's not
MAX_PULL_BYTES = 4 << 20  # one pull's answer, as a master's pull.max_bytes

# (broker id, queue id, first offset, max messages, max bytes, timeout s) -> stored records laid
# end to end (b"" when the broker has none of them); raises a TailraceError when it cannot answer
Pull = Callable[[int, int, int, int, int, float], bytes]


@dataclass
class Fetched:
    messages: list[PoppedMessage] = field(default_factory=list)  # whole, in the references' order
    mismatched: list[PoppedMessage] = field(default_factory=list)  # tag hash collisions: ack at once
    missing: list[PoppedElsewhere] = field(default_factory=list)  # no body found: give back
    served_by: Counter[int] = field(default_factory=Counter)  # messages per broker id read from
    fallbacks: int = 0  # runs (or their rests) read from the master instead
    errors: list[TailraceError] = field(default_factory=list)  # why a broker could not serve
    failed: set[int] = field(default_factory=set)  # slaves that failed (an error, a wrong record)


def runs(refs: Sequence[PoppedElsewhere]) -> list[list[PoppedElsewhere]]:
    """The references in runs of contiguous offsets of one queue and one
    broker, each run in offset order."""
    out: list[list[PoppedElsewhere]] = []
    for ref in sorted(refs, key=lambda r: (r.read_from, r.queue_id, r.queue_offset)):
        last = out[-1][-1] if out else None
        if (
            last is not None
            and (last.read_from, last.queue_id) == (ref.read_from, ref.queue_id)
            and ref.queue_offset == last.queue_offset + 1
        ):
            out[-1].append(ref)
        else:
            out.append([ref])
    return out


def fetch_bodies(
    refs: Sequence[PoppedElsewhere],
    pull: Pull,
    sub: Subscription,
    deadline: float,
    clock: Callable[[], float],
    topic: str,
) -> Fetched:
    """Read every referenced record: from its broker, then the master for
    the rest. `deadline`: on `clock`'s scale, when the caller's time ends;
    the slaves' reads end sooner (`SLAVE_SHARE_S`, or half the time left),
    so the master always has the rest of it. A record is taken only if it
    is the one referenced: `topic`'s, at the queue, queue offset and
    CommitLog offset the master named, of its size."""
    out = Fetched()
    got: dict[tuple[int, int], tuple[Record, bytes]] = {}
    start = clock()
    slaves_end = start + min(SLAVE_SHARE_S, max(0.0, deadline - start) / 2)
    for run in runs(refs):
        broker, rest = run[0].read_from, run
        if broker != MASTER_ID and broker not in out.failed:
            rest = _read_run(run, broker, topic, pull, slaves_end, clock, got, out)
        if rest:
            if broker != MASTER_ID:
                out.fallbacks += 1
            _read_run(rest, MASTER_ID, topic, pull, deadline, clock, got, out)
    for ref in refs:
        found = got.get((ref.queue_id, ref.queue_offset))
        if found is None:
            out.missing.append(ref)
            continue
        msg = PoppedMessage(found[0], found[1], ref.attempt, ref.handle, ref.deadline_ms)
        (out.messages if sub.matches(found[0].tags) else out.mismatched).append(msg)
    return out


def _read_run(
    run: list[PoppedElsewhere],
    broker_id: int,
    topic: str,
    pull: Pull,
    deadline: float,
    clock: Callable[[], float],
    got: dict[tuple[int, int], tuple[Record, bytes]],
    out: Fetched,
) -> list[PoppedElsewhere]:
    """Pull `run` from `broker_id` until it is read or the broker stops
    serving it; the references not read."""
    left = list(run)
    while left:
        timeout = deadline - clock()
        if timeout < MIN_CALL_S:
            break
        first = left[0]
        nbytes = min(MAX_PULL_BYTES, sum(r.size for r in left))
        try:
            data = pull(broker_id, first.queue_id, first.queue_offset, len(left), nbytes, timeout)
        except TailraceError as exc:
            out.errors.append(exc)
            if broker_id != MASTER_ID:
                out.failed.add(broker_id)
            break
        served = 0
        pos = 0
        try:
            for rec in iter_records(data):  # (the CRC too: these bytes crossed the network)
                ref = left[served] if served < len(left) else None
                if ref is None or (rec.queue_id, rec.queue_offset) != (ref.queue_id, ref.queue_offset):
                    break  # not the next one referenced (removed, past the run): the rest from elsewhere
                if (rec.topic, rec.physical_offset, rec.size) != (topic, ref.physical_offset, ref.size):
                    if broker_id != MASTER_ID:  # another record where the referenced one is: not this slave
                        out.failed.add(broker_id)
                    where = f"{topic}/{ref.queue_id} offset {ref.queue_offset}"
                    out.errors.append(CorruptRecordError(f"broker {broker_id}: not the record of {where}"))
                    break
                got[(ref.queue_id, ref.queue_offset)] = (rec, data[pos : pos + rec.size])
                pos += rec.size
                served += 1
        except TailraceError as exc:  # a damaged answer: what came before it stands
            out.errors.append(exc)
            if broker_id != MASTER_ID:
                out.failed.add(broker_id)
        out.served_by[broker_id] += served
        del left[:served]
        if not served:
            break
    return left


class RoutedPull:
    """`Pull` over a topic's route: the broker id's address in the broker
    group (a slave that is not alive in the route is not asked: the master
    serves instead), one native Pull on the caller's connections."""

    def __init__(
        self, routes: Routes, pool: ConnectionPool, broker_name: str, group: str, topic: str
    ) -> None:
        self.routes = routes
        self.pool = pool
        self.broker_name = broker_name
        self.group = group
        self.topic = topic

    def __call__(
        self, broker_id: int, queue_id: int, offset: int, count: int, nbytes: int, timeout_s: float
    ) -> bytes:
        route = self.routes.get(self.topic, timeout_s=timeout_s)
        g = route.group(self.broker_name)
        address = None
        if g is not None:
            if broker_id == MASTER_ID:
                address = g.master.address if g.master is not None else None
            else:
                address = next((b.address for b in g.brokers if b.broker_id == broker_id and b.alive), None)
        if address is None:
            raise BrokerUnavailableError(
                f"{self.broker_name} has no live broker {broker_id} for {self.topic!r}"
            )
        conn = self.pool.get(address)
        req = pb.PullRequest(
            group=self.group,
            topic=self.topic,
            queue_id=queue_id,
            queue_offset=offset,
            max_messages=count,
            max_bytes=nbytes,
        )
        reply = conn.call(conn.stub.Pull, req, timeout_s)
        return bytes(reply.records) if reply.status == pb.FOUND else b""
