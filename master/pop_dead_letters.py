"""Popped messages into `%DLQ%<group>` (master/popper.py's two ways there):
the revive pass's, for an entry delivered `broker.pop_max_attempts` times,
and PopDeadLetter's, a client's (RocketMQ's push consumers send a FIFO
message there after their last local retry). Either way the message goes
through the send path of the push consumers' dead letters
(`RECONSUME_TIMES` = its attempts, `ORIGIN_TOPIC`), then its entry is acked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.errors import BrokerBusyError, InvalidReceiptError
from core.pop.state import Key
from core.record import Message, Record
from core.retry import ORIGIN_TOPIC, RECONSUME_TIMES, check_client_group, dlq_topic

if TYPE_CHECKING:
    from master.popper import Popper

log = logging.getLogger(__name__)


def _store(p: Popper, key: Key, offset: int, rec: Record, attempts: int) -> None:
    group, topic, q = key
    leader = p.leader
    dlq = dlq_topic(group)
    leader.ensure_topic(dlq, 1)
    props = dict(rec.properties)
    props[RECONSUME_TIMES] = str(attempts)
    props.setdefault(ORIGIN_TOPIC, topic)
    msg = Message(dlq, 0, rec.body, tags=rec.tags, keys=rec.keys, properties=props)
    out = leader.send(dlq, 0, [msg], internal=True)
    if not out.results:
        raise BrokerBusyError(f"storing it in {dlq}: {out.status} {out.detail}")
    log.warning("pop: %s/%s queue %d offset %d delivered %d times: moved to %s",
                group, topic, q, offset, attempts, dlq)  # fmt: skip


def expired(p: Popper, key: Key, offset: int, gen: int, attempts: int) -> int:
    """The revive pass's: 1 if a message was moved (0: gone, or acked or
    changed meanwhile: then in the DLQ once more at worst)."""
    leader = p.leader
    got = p._read_one(key[1], key[2], offset)
    if got is not None:
        _store(p, key, offset, got[0], attempts)
    with leader._writing(), p._lock:
        try:
            plan = p.table.plan_ack(key, offset, gen)
        except InvalidReceiptError:
            return 0
        leader.core.store.append_system("pop", plan)
    return 1 if got is not None else 0


def by_client(p: Popper, group: str, topic: str, handle: str) -> None:
    """PopDeadLetter: the message a live handle names into the DLQ, its entry
    acked. The pop lock is held from the handle's check to the ack (the send
    enters the write gate itself, which never blocks): a stale handle stores
    nothing, and no ack, change or pop of the entry comes in between. In
    sync mode that holds pops up to one replication wait; the call is rare."""
    check_client_group(group)
    r = p.receipt(group, topic, handle)
    key = (r.group, r.topic, r.queue)
    leader = p.leader
    with p._lock:
        p.table.plan_ack(key, r.offset, r.gen)  # live? (else INVALID_RECEIPT_HANDLE: nothing stored)
        entry = p.table.get(key).inflight[r.offset]  # type: ignore[union-attr]  # (checked live)
        got = p._read_one(topic, r.queue, r.offset)
        if got is not None:  # (None: removed by retention, nothing to move: only settled)
            _store(p, key, r.offset, got[0], entry.attempt)
        with leader._writing():
            leader.core.store.append_system("pop", p.table.plan_ack(key, r.offset, r.gen))
    p._confirm("dead-lettered")
