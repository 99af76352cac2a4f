"""Deleting a topic on a broker group's master (`tailrace topic delete`,
BrokerAdmin.DeleteTopic): what would go, the refusals, and one batch of
system records that does it.

The batch, written under the leader's write gate with topic changes held
off (`LeaderRole.write_system`), so slaves, recovery and a promoted slave
apply the same thing in the same log order:

- an `offset` record of offset -1 (core/offsets.py) per committed offset on
  the topic, each with its `prev` (a cut tail gives it back);
- a pop `rst` record to 0 per pop queue of the topic (core/pop/state.py):
  its in-flight entries go, its generation stays, so a receipt handle from
  before never acks a message of a topic re-created under the same name;
- the `topic` deletion record (core/store/deletion.py), last: the table
  entry and ConsumeQueues go; the messages stay in the CommitLog until
  retention.

Memory-only state goes on the master at once: queue locks (the leader's),
and on every broker as the deletion record is applied: the admin read log.
Routes follow: every broker re-registers its topics when they change, and
the nameserver routes only what a live broker registers.

Refused outright: names starting with `%` (the broker's schedule, timer and
transaction topics) except a group's retry and dead-letter topics
(`%RETRY%G`, `%DLQ%G`), which need `force` (the group's next failed message
re-creates its retry topic). The timer's and transactions' pending messages
for the topic are not dropped: when due (committed) they are sent to it like
any send, so auto-create rules apply (re-created, or refused and logged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.errors import InvalidArgumentError, InvalidTopicError, UnknownTopicError
from core.offsets import FORGET
from core.record import validate_topic
from core.retry import DLQ_PREFIX, RETRY_PREFIX
from core.store.deletion import is_deletion

if TYPE_CHECKING:
    from core.broker.core import BrokerCore

Records = list[tuple[str, dict[str, Any]]]


def check_deletable(topic: str, force: bool) -> None:
    """Refuse the broker's own topics; a group's retry and dead-letter topics need `force`."""
    validate_topic(topic)
    if not topic.startswith("%"):
        return
    if topic.startswith((RETRY_PREFIX, DLQ_PREFIX)) and len(topic) > len(RETRY_PREFIX):
        if not force:
            raise InvalidArgumentError(
                f"{topic!r} is a consumer group's retry or dead-letter topic: --force deletes it "
                "(the group's next failed message creates its retry topic again)"
            )
        return
    raise InvalidTopicError(f"{topic!r} is one of the broker's own topics: it cannot be deleted")


def plan_deletion(core: BrokerCore, topic: str) -> tuple[dict[str, Any], Records]:
    """(what would go, the records that delete it); UnknownTopicError if this
    broker has no such topic."""
    store = core.store
    count = store.topics.queue_count(topic)
    if count is None:
        raise UnknownTopicError(f"topic {topic!r} does not exist on {core.broker_name}")
    queues = [(q, *store.queue_offsets(topic, q)) for q in range(count)]
    committed = core.offsets.keys()
    offsets = sorted(k for k in committed if k[1] == topic)
    pops = sorted(k for k in core.pops.queues() if k[1] == topic)
    records: Records = []
    for g, t, q in offsets:
        prev = core.offsets.query(g, t, q)
        records.append(("offset", {"group": g, "topic": t, "queue": q, "offset": FORGET, "prev": prev}))
    gen_floor = core.epoch << 32
    records += [("pop", core.pops.plan_reset(key, 0, gen_floor)) for key in pops]
    records.append(("topic", {"name": topic, "delete": True}))
    st = {key: core.pops.get(key) for key in pops}
    summary = {
        "queues": [{"queue_id": q, "min_offset": lo, "max_offset": hi} for q, lo, hi in queues],
        "messages": sum(hi - lo for _q, lo, hi in queues),
        "offsets": [
            {"group": g, "queue_id": q, "offset": core.offsets.query(g, t, q)} for g, t, q in offsets
        ],
        "groups": sorted({k[0] for k in offsets} | {k[0] for k in pops}),
        "pop_inflight": sum(len(s.inflight) for s in st.values() if s is not None),
    }
    return summary, records


def delete_topic(core: BrokerCore, topic: str, dry_run: bool, force: bool) -> tuple[dict[str, Any], bool]:
    """(what goes, deleted). Everything is checked first: a refusal changes nothing."""
    check_deletable(topic, force)
    summary, _ = plan_deletion(core, topic)
    if dry_run:
        return summary, False
    leader = core.leader()
    done: dict[str, Any] = {}

    def plan() -> Records:  # under the write gate: nothing changes the topic meanwhile
        what, records = plan_deletion(core, topic)
        done.update(what)
        return records

    leader.write_system(plan)
    locks = getattr(leader, "queue_locks", None)
    if locks is not None:
        locks.forget_topic(topic)
    return done, True


def forget_deleted(core: BrokerCore, payload: dict[str, Any]) -> None:
    """A `topic` record's memory-only part on every broker: a deleted topic's
    last pulls leave the admin read log."""
    if is_deletion(payload):
        core.reads.forget_topic(str(payload.get("name")))
