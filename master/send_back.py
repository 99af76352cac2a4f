"""A message a consumer failed, taken back by the master (the push
consumers' send-back, docs/design.md "Retries"): parked in the schedule for
the group's retry topic, or dead-lettered after its last attempt. The
scheduler (master/scheduler.py) moves it on once due."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from core.errors import BrokerBusyError, LeaseExpiredError
from core.record import Message, validate_topic
from core.retry import DELIVER_AT, SCHEDULE_TOPIC, check_send_back, plan_send_back, retry_topic
from core.roles import SendStatus

if TYPE_CHECKING:
    from master.leader import LeaderRole


def send_back(
    leader: LeaderRole, group: str, topic: str, message: Message, max_reconsume: int
) -> tuple[str, int, int]:
    """Park `message` in the schedule (queue = delay level) for the group's
    retry topic, or dead-letter it after `max_reconsume` attempts. Returns
    (destination, attempts, deliver_at_ms). What the scheduler could never
    move (no valid retry topic name, no room for the topic under
    quotas.max_topics) is refused here instead."""
    check_send_back(group, max_reconsume)
    validate_topic(topic)
    dest, queue, props, attempts = plan_send_back(
        message.properties or {}, topic, group, max_reconsume, leader.retry_delays, int(time.time() * 1000)
    )
    queues = len(leader.retry_delays) if dest == SCHEDULE_TOPIC else 1
    stored = Message(dest, queue, message.body, tags=message.tags, keys=message.keys, properties=props)
    # a message that will not be stored must not leave its retry or dead-letter topic behind
    # (checked on queue 0: a schedule made before levels were added grows below)
    leader.core.store.validate([replace(stored, queue_id=0)], queues)
    if leader.core.config.replication.sync and not leader._sync_ready():
        raise BrokerBusyError("too few in-sync slaves to take it back now; nothing stored")
    if dest == SCHEDULE_TOPIC:
        leader.ensure_topic(retry_topic(group), 1)
    leader.ensure_topic(dest, queues)
    out = leader.send(dest, queue, [stored], internal=True)
    if out.status is SendStatus.MASTER_LEASE_EXPIRED:  # the consumer retries it like any send
        raise LeaseExpiredError(f"the message was not stored for a retry: {out.detail}")
    if out.status is not SendStatus.SEND_OK:
        raise BrokerBusyError(f"the message was not stored for a retry ({out.status}): {out.detail}")
    return dest, attempts, int(props.get(DELIVER_AT, "0"))
