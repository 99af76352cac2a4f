"""PushConsumer: the pull path, with a processing pool behind it.

The Tailrace counterpart of RocketMQ's DefaultMQPushConsumer. One thread
polls a `PullConsumer` (group membership, rebalancing, long polls, the
suggest-pull-from-slave advice) and hands the messages to a pool of
`consume_threads` (`consumer/consume_pool.py`), `batch_size` messages per
`handler(messages)` call. The handler returns `ConsumeStatus.SUCCESS` (or
None) or `RETRY_LATER`; raising counts as `RETRY_LATER`.

- **Safe commits**: each queue's messages wait in a `ProcessQueue` until
  processed; the committed offset is the lowest one not processed yet, so a
  crash redelivers but never skips.
- **Flow control**: a queue is not pulled while it holds
  `max_cached_messages` (1,000) or `max_cached_bytes` (100 MiB) unprocessed,
  or while its newest pulled offset is `max_span` (2,000) past its oldest
  unprocessed one (a stuck message); memory stays bounded however long the
  backlog.
- **Orderly mode** (`orderly=True`): one thread at a time per queue, in
  offset order; a failed batch is retried in place after `retry_backoff_s`.
  A queue is pulled and processed only while this member holds its lock on
  the master (`LockQueues`, a lease renewed every `lock_lease_ms`/4, kept by
  `consumer/queue_locks.py`); on taking a lock it reads from the group's
  committed offset. A queue given up in a rebalance is committed after its
  thread stopped, then unlocked: the next owner starts exactly there, and
  never while the old one processes.
- **Failures** (concurrent mode): each message of a failed batch is handed
  back to its broker (`SendBack`), which redelivers it through the group's
  retry topic `%RETRY%<group>` after the next delay level (the broker's
  `retry_delays`), counting attempts in its `RECONSUME_TIMES` property, and
  after `max_reconsume` attempts stores it in `%DLQ%<group>`. This consumer
  reads the retry topic beside its own (both in `consumer/send_back.py`). A
  message the broker cannot take back (or every failure, with
  `send_back=False`) is retried in this process after `retry_delays_s`,
  holding the commit point until it succeeds.
- **Shutdown** (`close`): stop pulling, let in-flight batches finish for up
  to `shutdown_timeout_s` (the rest are abandoned, so not committed), commit,
  leave the group.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from consumer.connection import ConnectionPool
from consumer.consume_pool import ConsumePool
from consumer.delayed import Delayed
from consumer.fetcher import DENIED_BACKOFF_S
from consumer.process_queue import ProcessQueue
from consumer.profile import Profile
from consumer.pull_consumer import PullConsumer, ReceivedMessage
from consumer.push_queues import (
    DEFAULT_RETRY_DELAYS_S,
    ConsumeStatus,
    MiB,
    PushCounters,
    PushQueues,
    PushSettings,
    succeeded,
)
from consumer.queue_hooks import Key, TopicHooks
from consumer.queue_locks import QueueLocks
from consumer.retry_plan import ACCESS_REFUSED
from consumer.send_back import SendBack
from core.errors import InvalidArgumentError
from core.route import MessageQueue

log = logging.getLogger(__name__)

Handler = Callable[[list[ReceivedMessage]], "ConsumeStatus | None"]
__all__ = ["ConsumeStatus", "Handler", "PushConsumer"]


class PushConsumer(PushCounters):
    def __init__(
        self,
        group: str,
        topic: str,
        handler: Handler,
        subscription: str = "*",
        *,
        namesrv: Sequence[str] | str | None = None,
        broker: str | None = None,
        consume_threads: int = 20,
        batch_size: int = 1,
        orderly: bool = False,
        max_cached_messages: int = 1000,
        max_cached_bytes: int = 100 * MiB,
        start: Literal["first", "last"] = "first",
        pull_batch: int = 32,
        heartbeat_ms: int = 3000,
        rebalance_interval_ms: int = 20_000,
        auto_commit_interval_ms: int = 1000,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
        max_reconsume: int = 16,
        send_back: bool = True,
        lock_lease_ms: int = 10_000,
        max_span: int = 2000,
        client_id: str | None = None,
        retry_backoff_s: float = 1.0,
        shutdown_timeout_s: float = 10.0,
        on_commit: Callable[[MessageQueue, int], None] | None = None,
        route_timeout_s: float = 0.0,
        profile: str | Path | Profile | None = None,
    ) -> None:
        """`route_timeout_s`: how long to wait for the nameservers to route the
        topic (see PullConsumer) before failing with `UnknownTopicError`.
        `profile`: the client profile (consumer/profile.py; None:
        `$TAILRACE_PROFILE`, else plaintext), read once for the group's topic
        and its retry topic; its nameservers are used when neither `broker`
        nor `namesrv` is given."""
        if not 1 <= consume_threads <= 1024:
            raise InvalidArgumentError("consume_threads must be in 1..1024")
        self.settings = settings = PushSettings(
            batch_size=batch_size, orderly=orderly, max_cached_messages=max_cached_messages,
            max_cached_bytes=max_cached_bytes, retry_delays_s=tuple(retry_delays_s),
            max_reconsume=max_reconsume, send_back=send_back, lock_lease_ms=lock_lease_ms,
            max_span=max_span, retry_backoff_s=retry_backoff_s, shutdown_timeout_s=shutdown_timeout_s,
        )  # fmt: skip
        settings.check(group)
        self.handler = handler
        self.group = group
        self._make_pull = functools.partial(
            PullConsumer,
            broker,
            group,
            start=start,
            namesrv=namesrv,
            max_messages=pull_batch,
            heartbeat_ms=heartbeat_ms,
            rebalance_interval_ms=rebalance_interval_ms,
            auto_commit_interval_ms=auto_commit_interval_ms,
            on_commit=on_commit,
            client_id=client_id,
            profile=Profile.resolve(profile),
        )
        self.queues = PushQueues(settings)
        self._stop = threading.Event()
        self._workers = ConsumePool(consume_threads)
        self._later = Delayed("local-retries")
        self.pull = self._make_pull(
            topic, subscription, hooks=TopicHooks(self.queues, topic), route_timeout_s=route_timeout_s
        )
        # orderly: the queues' locks (built before the dispatcher polls: the hooks ask it)
        self._lock_stop = threading.Event()  # set last in a close: locks held until the final commit
        self._locks = QueueLocks(self.pull, group, lock_lease_ms, self._lock_stop, self._drop_cached)
        if orderly:
            self.queues.holds = self._locks.holds
            self.queues.on_released = self._locks.release
        # concurrent mode: failed messages back to the brokers, and the retry topic read
        self._retries = SendBack(self.pull, group, max_reconsume, self._open_retry_consumer)
        self._thread = threading.Thread(target=self._run, name="push-dispatch", daemon=True)
        self._thread.start()
        self._lock_thread: threading.Thread | None = None
        if orderly:
            self._lock_thread = threading.Thread(target=self._locks.keep, name="queue-locks", daemon=True)
            self._lock_thread.start()

    # ---- dispatch ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._dispatch(self._poll(self.pull, 50))
            if self.settings.reads_retry_topic:
                try:
                    if self.retry is None:
                        self._retries.open()
                except Exception:
                    log.exception("opening the retry topic failed (trying again)")
                if self.retry is not None:
                    self._dispatch(self._poll(self.retry, 0))  # what has arrived: no wait

    def _poll(self, consumer: PullConsumer, timeout_ms: int) -> list[ReceivedMessage]:
        try:
            return consumer.poll(timeout_ms)
        except ACCESS_REFUSED as exc:  # final until an operator changes the ACL: say so, slowly
            log.error("poll of %s refused: %s (polling again in %g s)", consumer.topic, exc, DENIED_BACKOFF_S)
            self._stop.wait(DENIED_BACKOFF_S)
            return []
        except Exception:  # never die: the consumer would silently stop
            log.exception("poll of %s failed", consumer.topic)
            self._stop.wait(0.5)
            return []

    def _dispatch(self, messages: list[ReceivedMessage]) -> None:
        """Hand polled messages to their process queues and the pool."""
        for key, pq, msgs in self.queues.runs(messages):
            if self.settings.orderly:
                self._schedule_orderly(key, pq)
            else:
                self._workers.submit_run(self._consume_run, (pq, 0), msgs, self.settings.batch_size)

    def _open_retry_consumer(self, topic: str) -> PullConsumer:
        """The retry topic's consumer: always from the first offset, since
        what was sent back must all come back."""
        return self._make_pull(
            topic, "*", start="first", hooks=TopicHooks(self.queues, topic), members_of=self.pull
        )

    def _call(self, batch: list[ReceivedMessage]) -> bool:
        try:
            return succeeded(self.handler(batch))
        except Exception:
            log.exception("handler failed on %d message(s); retrying later", len(batch))
            return False

    # ---- concurrent mode -----------------------------------------------------------------

    def _consume_run(self, ctx: tuple[ProcessQueue, int], msgs: list[ReceivedMessage], n: int,
                     deadline: float) -> int:  # fmt: skip
        """The pool's run function (`consume_pool.RunFn`): attempt `ctx[1]` of
        `msgs`, `n` per handler call, until done or past `deadline`. Successes
        are marked done once, at the end (until then they only hold the
        commit point back: safe). Closing abandons the batches not started."""
        pq, attempt = ctx
        ok: list[int] = []
        i = 0
        try:
            while i < len(msgs) and not (pq.dropped or self._stop.is_set()):
                batch = msgs[i : i + n]
                i += n
                try:
                    if self._call(batch):
                        ok += [m.queue_offset for m in batch]
                    else:
                        self._failed(pq, batch, attempt)
                except Exception:  # past the handler (a bug): this batch stays pending, say so
                    log.exception("processing %d message(s) failed", len(batch))
                if i < len(msgs) and time.perf_counter() > deadline:
                    return i
        finally:
            if ok:
                pq.done(ok)
                self.queues.count(consumed=len(ok))
        return len(msgs)

    def _failed(self, pq: ProcessQueue, batch: list[ReceivedMessage], attempt: int) -> None:
        """Attempt `attempt` of `batch` failed: back to the broker, or a local retry later."""
        if self.settings.send_back:
            kept = []
            for m in batch:
                if self._retries.send(m):
                    pq.done([m.queue_offset])
                else:
                    kept.append(m)
            if not kept:
                return
            batch = kept
        self.queues.count(retried=1)
        retry = (self._consume_run, (pq, attempt + 1), batch, len(batch))
        later = functools.partial(self._workers.submit_run, *retry)
        self._later.call_later(self.settings.retry_delay(attempt), later)

    # ---- orderly mode --------------------------------------------------------------------

    def _schedule_orderly(self, key: Key, pq: ProcessQueue) -> None:
        if pq.acquire():
            self._workers.submit(self._consume_orderly, key, pq)

    def _drop_cached(self, mq: MessageQueue) -> None:
        """Forget what was pulled of `mq` (its lock was just taken: it is read
        again from the group's commit)."""
        pq = self.queues.forget((self.pull.topic, mq))
        if pq is not None:
            pq.wait_idle(self.settings.shutdown_timeout_s)

    def _consume_orderly(self, key: Key, pq: ProcessQueue) -> None:
        try:
            while not pq.dropped and not self._stop.is_set() and self._locks.holds(key[1]):
                batch = pq.take(self.settings.batch_size)
                if not batch:
                    break
                if self._call(batch):
                    pq.done([m.queue_offset for m in batch])
                    self.queues.count(consumed=len(batch))
                else:
                    pq.put_back(batch)
                    self.queues.count(retried=1)
                    if self._stop.wait(self.settings.retry_backoff_s):
                        break
        finally:
            if pq.release() and self._locks.holds(key[1]) and not self._stop.is_set():
                self._schedule_orderly(key, pq)  # messages arrived meanwhile

    # ---- status and shutdown ---------------------------------------------------------------

    @property
    def assignment(self) -> list[MessageQueue]:
        return self.pull.assignment

    @property
    def retry(self) -> PullConsumer | None:
        """The retry topic's consumer, once routed."""
        return self._retries.consumer

    @property
    def sent_back(self) -> int:
        """Messages the brokers took back for a retry."""
        return self._retries.sent_back

    def close(self) -> None:
        """Stop pulling, finish (or after `shutdown_timeout_s` abandon) the
        batches in flight, commit what was processed, leave the group."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        stopped = not self._thread.is_alive()
        if not stopped:  # it may have polled messages it has not queued yet: no commit
            log.warning("the dispatcher did not stop in 10 s: closing without a commit")
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        abandoned = self._workers.wait_idle(max(0.0, deadline - time.monotonic()))
        if abandoned:
            log.warning("abandoning %d batch(es) still running: they will be delivered again", abandoned)
        self._workers.shutdown()
        self._later.close()
        if self._lock_thread is not None:
            self._lock_stop.set()
            self._lock_thread.join(5)
            try:
                self._locks.round()  # renewed just before the final commit (only holders commit)
            except Exception:
                log.exception("renewing queue locks before the final commit failed")
        if self.retry is not None:
            self.retry.close(commit=stopped)
        held = self._locks.held()
        self.pull.close(commit=stopped)
        if held:  # committed: release them for the next owner
            pool = ConnectionPool(5.0, self.pull.security)  # the pull consumer's own pool is closed now
            try:
                self._locks.unlock(held, pool)
            finally:
                pool.close()

    def __enter__(self) -> PushConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
