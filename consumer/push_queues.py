"""What a push consumer is, apart from how it runs its handler.

Both push consumers, the threaded `PushConsumer` (consumer/push_consumer.py,
a pool of threads) and the asyncio `AsyncPushConsumer`
(consumer/aio/push_consumer.py, coroutines), are this state driven by a
different engine:

- `PushSettings`: the options both take, validated once;
- `PushQueues`: the assigned queues' `ProcessQueue`s, and the hooks the pull
  consumers call at each pull, commit and rebalance (`QueueHooks`, through
  `TopicHooks`): flow control, the commit point (the lowest offset not yet
  processed), revoking and releasing queues, orderly mode's lock check;
- `succeeded(status)`: what a handler's answer means.

Nothing here does I/O or waits on the event loop: the pull consumers call
the hooks from their own threads (the async consumer's control path runs in
worker threads too, so an orderly revoke may wait there for a handler
running on the event loop), and a lock held here is held for microseconds.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
import operator
import threading
from collections.abc import Callable, Iterator, Sequence

from consumer.process_queue import ProcessQueue
from consumer.pull_consumer import ReceivedMessage
from consumer.queue_hooks import Key
from core.errors import InvalidArgumentError, InvalidTopicError
from core.record import validate_topic
from core.retry import retry_topic
from core.route import MessageQueue

log = logging.getLogger(__name__)
MiB = 1024 * 1024
DEFAULT_RETRY_DELAYS_S = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0)
_queue_of = operator.attrgetter("topic", "broker_name", "queue_id")


class ConsumeStatus(enum.Enum):
    SUCCESS = "SUCCESS"
    RETRY_LATER = "RETRY_LATER"


def succeeded(status: object) -> bool:
    """A handler's answer: None or SUCCESS is a success, anything else a retry."""
    return status is None or status is ConsumeStatus.SUCCESS


@dataclasses.dataclass(frozen=True)
class PushSettings:
    """A push consumer's processing options (documented on `PushConsumer`)."""

    batch_size: int = 1
    orderly: bool = False
    max_cached_messages: int = 1000
    max_cached_bytes: int = 100 * MiB
    retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S
    max_reconsume: int = 16
    send_back: bool = True
    lock_lease_ms: int = 10_000
    max_span: int = 2000
    retry_backoff_s: float = 1.0
    shutdown_timeout_s: float = 10.0

    def check(self, group: str) -> None:
        """Raise `InvalidArgumentError` on a value no consumer can run with."""
        if not 1 <= self.batch_size <= 1024:
            raise InvalidArgumentError("batch_size must be in 1..1024")
        if self.max_cached_messages < 1 or self.max_cached_bytes < 1024:
            raise InvalidArgumentError("max_cached_messages >= 1 and max_cached_bytes >= 1024")
        if not 0 <= self.max_reconsume <= 1000:
            raise InvalidArgumentError("max_reconsume must be in 0..1000")
        if not self.retry_delays_s or min(self.retry_delays_s) < 0:
            raise InvalidArgumentError("retry_delays_s needs at least one delay, none negative")
        if self.send_back:  # the retry topic's name must be a valid topic name
            try:
                validate_topic(retry_topic(group))
            except InvalidTopicError as exc:
                raise InvalidArgumentError(f"group {group!r} is too long for its retry topic: {exc}") from exc

    def retry_delay(self, attempt: int) -> float:
        """How long a batch that failed `attempt + 1` times waits in this process."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s) - 1)]

    @property
    def reads_retry_topic(self) -> bool:
        """Failures go back to the brokers, so the retry topic is read too."""
        return self.send_back and not self.orderly


Run = tuple[Key, ProcessQueue, list[ReceivedMessage]]
SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(PushSettings))


class PushQueues:
    """The process queues of one push consumer, and the hooks over them
    (`KeyedQueues`: `TopicHooks` forwards each pull consumer's calls here)."""

    def __init__(self, settings: PushSettings) -> None:
        self.s = settings
        self._queues: dict[Key, ProcessQueue] = {}
        self._revoked: dict[Key, ProcessQueue] = {}  # until their commit
        self._lock = threading.Lock()
        # orderly mode: is this queue's lock held (nothing is, until the engine
        # wires its QueueLocks in), and what to do once a queue is given up
        self.holds: Callable[[MessageQueue], bool] = lambda mq: False
        self.on_released: Callable[[MessageQueue, ProcessQueue | None], None] = lambda mq, pq: None
        self.consumed = 0  # messages processed with SUCCESS
        self.retried = 0  # batches handed back for a retry

    # ---- the hooks ----------------------------------------------------------------------

    def paused(self, key: Key) -> bool:
        if self.s.orderly and not self.holds(key[1]):
            return True  # orderly: no lock, no pulls
        pq, s = self._queues.get(key), self.s
        return pq is not None and pq.over(s.max_cached_messages, s.max_cached_bytes, s.max_span)

    def commit_point(self, key: Key, pulled: int) -> int | None:
        pq = self._queues.get(key) or self._revoked.get(key)
        if self.s.orderly and not self.holds(key[1]) and key not in self._revoked:
            return None  # not ours to commit: its owner (or the lock) is elsewhere
        return pulled if pq is None else pq.commit_point(pulled)

    def revoked(self, key: Key) -> None:
        with self._lock:
            pq = self._queues.pop(key, None)
            if pq is None:
                return
            pq.dropped = True  # results of batches still running are ignored
            self._revoked[key] = pq
        if self.s.orderly and not pq.wait_idle(self.s.shutdown_timeout_s):
            log.warning("%s still being processed after %.0f s; giving it up", key, self.s.shutdown_timeout_s)

    def released(self, key: Key) -> None:
        with self._lock:
            pq = self._revoked.pop(key, None)
        if self.s.orderly:
            self.on_released(key[1], pq)

    # ---- what the engines call -------------------------------------------------------------

    def runs(self, messages: list[ReceivedMessage]) -> Iterator[Run]:
        """Polled messages added to their process queues: one (key, queue,
        messages) per run of one queue's messages (a poll returns each queue's
        messages together: one lookup per run, not per message), less any
        offset already waiting in its queue. What poll returned has moved the
        pull position: every run must be processed."""
        for (topic, broker_name, queue_id), run in itertools.groupby(messages, _queue_of):
            msgs = list(run)
            key = (topic, MessageQueue(broker_name, queue_id))
            with self._lock:
                pq = self._queues.get(key)
                if pq is None:
                    pq = self._queues[key] = ProcessQueue()
                    self._revoked.pop(key, None)
            fresh = pq.add(msgs, self.s.orderly)
            if fresh:
                yield key, pq, fresh

    def forget(self, key: Key) -> ProcessQueue | None:
        """Orderly: drop what was pulled of a queue whose lock was just taken
        (it is read again from the group's commit); the caller waits for its
        handler to stop."""
        with self._lock:
            pq = self._queues.pop(key, None)
        if pq is not None:
            pq.dropped = True
        return pq

    def count(self, consumed: int = 0, retried: int = 0) -> None:
        with self._lock:
            self.consumed += consumed
            self.retried += retried

    def cached(self) -> tuple[int, int]:
        """(messages, bytes) waiting to be processed, over every queue."""
        with self._lock:
            queues = list(self._queues.values())
        return sum(q.count for q in queues), sum(q.bytes for q in queues)


class PushCounters:
    """What both push consumers report, from their `queues`."""

    queues: PushQueues

    @property
    def consumed(self) -> int:
        """Messages processed with SUCCESS."""
        return self.queues.consumed

    @property
    def retried(self) -> int:
        """Batches handed back for a retry."""
        return self.queues.retried

    def cached(self) -> tuple[int, int]:
        """(messages, bytes) waiting to be processed, over every queue."""
        return self.queues.cached()
