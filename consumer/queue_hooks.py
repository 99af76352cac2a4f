"""QueueHooks: how a consumer built on a `PullConsumer` steers it per queue.

The interface between `PullConsumer` (consumer/pull_consumer.py), which calls
these at each pull, commit and rebalance, and `PushConsumer`
(consumer/push_consumer.py), which implements them over its process queues
and queue locks. The defaults are the plain pull consumer's behaviour.
"""

from __future__ import annotations

from core.route import MessageQueue


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
