"""SendBack: a push consumer's broker-side retries, out and back in.

The concurrent-mode failure path of `PushConsumer`
(consumer/push_consumer.py), RocketMQ's sendMessageBack: a message whose
batch failed is handed back to its broker group's master (`SendBack`), which
redelivers it through the group's retry topic `%RETRY%<group>` after its next
delay level (or stores it in `%DLQ%<group>` after `max_reconsume`
attempts). This also opens the retry topic's consumer, which reads it beside
the group's own topic: the topic is created on each master the consumer
reads from, and opening is tried again (every `RETRY_TOPIC_CHECK_S`) until
the routes list it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from consumer.pull_consumer import PullConsumer, ReceivedMessage
from core.errors import TailraceError, UnknownTopicError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.retry import retry_topic

log = logging.getLogger(__name__)
RETRY_TOPIC_CHECK_S = 2.0


class SendBack:
    def __init__(
        self,
        pull: PullConsumer,
        group: str,
        max_reconsume: int,
        open_consumer: Callable[[str], PullConsumer],
    ) -> None:
        """`pull`: the consumer of the group's topic (routes, connections, the
        brokers it reads from); `open_consumer(topic)`: a consumer of the retry
        topic (raises `UnknownTopicError` while it is not routed)."""
        self.pull = pull
        self.group = group
        self.max_reconsume = max_reconsume
        self.open_consumer = open_consumer
        self.consumer: PullConsumer | None = None  # the retry topic's consumer, once routed
        self._next = 0.0
        self._lock = threading.Lock()
        self.sent_back = 0  # messages the brokers took back

    def open(self) -> None:
        """Create the group's retry topic on each master and read it too (the
        routes list it from the brokers' next registration: tried again)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + RETRY_TOPIC_CHECK_S
        topic = retry_topic(self.group)
        for name in {mq.broker_name for mq in self.pull.assignment}:  # only brokers it reads from
            address = self.pull.master_of(name)
            if address is None:
                continue
            conn = self.pull.pool.get(address)
            try:
                conn.call(conn.stub.CreateTopic, pb.CreateTopicRequest(topic=topic, queues=1))
            except TailraceError as exc:
                log.debug("creating %s on %s: %s", topic, address, exc)
        with contextlib.suppress(UnknownTopicError):  # not routed yet
            self.consumer = self.open_consumer(topic)

    def send(self, m: ReceivedMessage) -> bool:
        """Hand a failed message back to its broker group's master; False if
        it could not be (it is then retried in this process)."""
        address = self.pull.master_of(m.broker_name)
        if address is None:
            return False
        conn = self.pull.pool.get(address)
        req = pb.SendBackRequest(
            group=self.group,
            topic=m.topic,
            message=pb.Message(body=m.body, tags=m.tags, keys=m.keys, properties=m.properties),
            max_reconsume=self.max_reconsume,
        )
        try:
            conn.call(conn.stub.SendBack, req)
        except TailraceError as exc:
            log.warning("sending back %s/%d@%d failed: %s", m.topic, m.queue_id, m.queue_offset, exc)
            return False
        with self._lock:
            self.sent_back += 1
        return True
