"""QueueHooks: how a consumer built on a `PullConsumer` steers it per queue.

The interface between `PullConsumer` (consumer/pull_consumer.py), which calls
these at each pull, commit and rebalance, and `PushConsumer`
(consumer/push_consumer.py), which implements them over its process queues
and queue locks (`TopicHooks`: one pull consumer's view of them, keyed by
topic, since a push consumer reads its topic and its retry topic). The
defaults are the plain pull consumer's behaviour.
"""

from __future__ import annotations

from typing import Protocol

from core.route import MessageQueue

Key = tuple[str, MessageQueue]  # (topic, queue): the group's topic and its retry topic


class QueueHooks:
    """The defaults: a plain pull consumer's behaviour."""

    def paused(self, mq: MessageQueue) -> bool:
        """No new pull for this queue (flow control)."""
        return False

    def commit_point(self, mq: MessageQueue, pulled: int) -> int | None:
        """The offset to commit for a queue pulled up to `pulled`: everything
        polled, here; the lowest offset not yet processed, for a push consumer;
        None: do not commit it (an orderly member that does not hold it)."""
        return pulled

    def revoked(self, mq: MessageQueue) -> None:
        """The queue is about to be given up (then committed) in a rebalance."""

    def released(self, mq: MessageQueue) -> None:
        """The queue was given up and its offset committed."""


class KeyedQueues(Protocol):
    """What `TopicHooks` forwards to (a push consumer)."""

    def paused(self, key: Key) -> bool: ...
    def commit_point(self, key: Key, pulled: int) -> int | None: ...
    def revoked(self, key: Key) -> None: ...
    def released(self, key: Key) -> None: ...


class TopicHooks(QueueHooks):
    """One pull consumer's view of a push consumer's process queues."""

    def __init__(self, owner: KeyedQueues, topic: str) -> None:
        self.owner = owner
        self.topic = topic

    def paused(self, mq: MessageQueue) -> bool:
        return self.owner.paused((self.topic, mq))

    def commit_point(self, mq: MessageQueue, pulled: int) -> int | None:
        return self.owner.commit_point((self.topic, mq), pulled)

    def revoked(self, mq: MessageQueue) -> None:
        self.owner.revoked((self.topic, mq))

    def released(self, mq: MessageQueue) -> None:
        self.owner.released((self.topic, mq))
