"""AsyncPushConsumer: a push consumer whose handler is a coroutine.

The asyncio engine over the push consumer's shared state
(consumer/push_queues.py: process queues, flow control, the commit point,
the rebalance hooks) and its shared helpers (`SendBack` for failures,
`QueueLocks` for orderly mode), with the same guarantees as the threaded
`PushConsumer` (consumer/push_consumer.py, whose docstring says them):
commits never pass an unprocessed message, memory is bounded by flow
control, orderly mode runs one batch at a time per locked queue.

What differs is only how it runs:

- pulls are `AsyncPullConsumer` polls on `grpc.aio` (one loop task per
  topic: the group's topic and its retry topic);
- each polled run of a queue's messages becomes a task that awaits
  `handler(batch)`; at most `concurrency` handler calls run at once;
- a local retry is a task sleeping out its delay; a send back and the
  queue locks' calls are blocking control-path calls, made on threads of
  its own (consumer/aio/control.py; the lock lease on its own thread),
  never on the loop nor in the loop's default executor.

    async def handle(batch):
        ...

    async with AsyncPushConsumer(namesrv=NS, group="g", topic="t", handler=handle) as c:
        await stop_event.wait()

Options are the threaded `PushConsumer`'s processing options (`PushSettings`:
batch_size, orderly, max_cached_messages, retry_delays_s, send_back, ...)
plus `PullConsumer`'s (broker= or namesrv=, start, max_messages,
heartbeat_ms, auto_commit_interval_ms, on_commit, route_timeout_s,
profile, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from consumer.aio.consumer import AsyncPullConsumer
from consumer.aio.control import ControlThreads
from consumer.connection import ConnectionPool
from consumer.fetcher import DENIED_BACKOFF_S
from consumer.process_queue import ProcessQueue
from consumer.profile import Profile
from consumer.pull_consumer import PullConsumer, ReceivedMessage
from consumer.push_queues import (
    SETTINGS_FIELDS,
    ConsumeStatus,
    PushCounters,
    PushQueues,
    PushSettings,
    succeeded,
)
from consumer.queue_hooks import Key, TopicHooks
from consumer.queue_locks import QueueLocks
from consumer.retry_plan import ACCESS_REFUSED
from consumer.send_back import SendBack
from core.errors import InvalidArgumentError, TailraceError
from core.route import MessageQueue

log = logging.getLogger(__name__)

AsyncHandler = Callable[[list[ReceivedMessage]], Awaitable["ConsumeStatus | None"]]
POLL_MS = 100  # a dispatch loop notices a close within this (plus its housekeeping)
RETRY_TOPIC_WAIT_S = 0.5
SEND_BACK_THREADS = 4  # send backs (blocking calls to the masters) at once


class AsyncPushConsumer(PushCounters):
    def __init__(
        self,
        *,
        group: str,
        topic: str,
        handler: AsyncHandler,
        subscription: str = "*",
        concurrency: int = 20,
        **options: Any,
    ) -> None:
        """`concurrency`: how many handler calls may run at once (the threaded
        consumer's `consume_threads`). Other options: see the module docstring."""
        if not 1 <= concurrency <= 100_000:
            raise InvalidArgumentError("concurrency must be in 1..100000")
        if not _is_coroutine_function(handler):
            raise InvalidArgumentError(
                "handler must be a coroutine function (`async def`); a plain function goes to PushConsumer"
            )
        self.settings = PushSettings(**{k: options.pop(k) for k in list(options) if k in SETTINGS_FIELDS})
        self.settings.check(group)
        self.group = group
        self.topic = topic
        self.handler = handler
        self.concurrency = concurrency
        options.setdefault("max_messages", 32)  # per pull, as the threaded one's pull_batch
        options.setdefault("auto_commit_interval_ms", 1000)  # as the threaded one
        options["profile"] = Profile.resolve(options.get("profile"))  # read once, for both topics
        self._member_args = {**options, "group": group}
        self.queues = PushQueues(self.settings)
        self.pull = AsyncPullConsumer(
            topic=topic, subscription=subscription, hooks=TopicHooks(self.queues, topic), **self._member_args
        )
        self.retry: AsyncPullConsumer | None = None  # the retry topic's, once routed
        self._lock_stop = threading.Event()  # ends the lock keeper's thread (last thing of a close)
        self._sending = ControlThreads("tailrace-send-back", SEND_BACK_THREADS)  # send backs, retry topic
        self._send_slots: asyncio.Semaphore | None = None
        self._closing = False
        self._started = False
        self._sem: asyncio.Semaphore | None = None
        self._loops: list[asyncio.Task[None]] = []  # the dispatch loops
        self._work: set[asyncio.Task[None]] = set()  # handler runs
        self._waiting: set[asyncio.Task[None]] = set()  # local retries sleeping out their delay
        self._locks: QueueLocks | None = None
        self._retries: SendBack | None = None
        self._lock_thread: threading.Thread | None = None

    async def start(self) -> AsyncPushConsumer:
        """Join the group (on a control thread) and start consuming. A start
        that failed may be tried again; a closed consumer cannot start."""
        if self._closing:
            raise TailraceError("consumer is closed")
        if self._started:
            return self
        await self.pull.start()  # refuses (and leaves the group) if closed meanwhile
        if self._closing:
            raise TailraceError("consumer was closed while starting")
        self._sem = asyncio.Semaphore(self.concurrency)
        self._send_slots = asyncio.Semaphore(SEND_BACK_THREADS)
        member, s = self._member, self.settings
        self._locks = QueueLocks(member, self.group, s.lock_lease_ms, self._lock_stop, self._drop_cached)
        self._retries = SendBack(member, self.group, s.max_reconsume, self._open_retry_member)
        if self.settings.orderly:
            self.queues.holds = self._locks.holds
            self.queues.on_released = self._locks.release
            self._lock_thread = threading.Thread(target=self._locks.keep, name="queue-locks", daemon=True)
            self._lock_thread.start()
        self._loops.append(asyncio.create_task(self._run(self.pull), name=f"push:{self.topic}"))
        if self.settings.reads_retry_topic:
            self._loops.append(asyncio.create_task(self._run_retry(), name="push:retry-topic"))
        self._started = True
        return self

    @property
    def _member(self) -> PullConsumer:
        member = self.pull.member
        if member is None:
            raise TailraceError("the consumer is not started (use `async with` or `await start()`)")
        return member

    # ---- dispatch --------------------------------------------------------------------------

    async def _run(self, consumer: AsyncPullConsumer) -> None:
        """Poll one topic and hand what arrives to handler tasks, until closed.
        Never cancelled mid-poll while closing cleanly: what a poll returned
        has moved the pull position, so it is always dispatched."""
        while not self._closing:
            try:
                messages = await consumer.poll(POLL_MS)
            except ACCESS_REFUSED as exc:  # final until an operator changes the ACL: say so, slowly
                topic = consumer.member and consumer.member.topic
                log.error("poll of %s refused: %s (polling again in %g s)", topic, exc, DENIED_BACKOFF_S)
                for _ in range(int(DENIED_BACKOFF_S * 1000 / POLL_MS)):
                    if self._closing:
                        break
                    await asyncio.sleep(POLL_MS / 1000)
                continue
            except Exception:  # never die: the consumer would silently stop
                log.exception("poll of %s failed", consumer.member and consumer.member.topic)
                await asyncio.sleep(0.5)
                continue
            self._dispatch(messages)

    async def _run_retry(self) -> None:
        """Open the group's retry topic (in a worker thread, until the routes
        list it), then read it like the group's topic."""
        retries = self._retries
        assert retries is not None
        while not self._closing and retries.consumer is None:
            try:
                await self._sending.run(retries.open)
            except Exception:
                log.exception("opening the retry topic failed (trying again)")
            if retries.consumer is None:
                await asyncio.sleep(RETRY_TOPIC_WAIT_S)
        if retries.consumer is not None:
            self.retry = AsyncPullConsumer.of(retries.consumer)
            await self._run(self.retry)

    def _open_retry_member(self, topic: str) -> PullConsumer:
        """The retry topic's member (a worker thread calls this): always from
        the first offset, since what was sent back must all come back."""
        args = {k: v for k, v in self._member_args.items() if k != "route_timeout_s"}
        args.update(topic=topic, subscription="*", start="first", hooks=TopicHooks(self.queues, topic))
        return PullConsumer(**args, members_of=self._member)

    def _dispatch(self, messages: list[ReceivedMessage]) -> None:
        for key, pq, msgs in self.queues.runs(messages):
            if self.settings.orderly:
                self._schedule_orderly(key, pq)
            else:
                self._spawn(self._consume_run(pq, 0, msgs, self.settings.batch_size), self._work)

    def _spawn(self, coro: Coroutine[Any, Any, None], into: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    async def _call(self, pq: ProcessQueue, batch: list[ReceivedMessage]) -> bool | None:
        """The handler's verdict on `batch`; None: not called (its queue was
        given up, or the consumer is closing, while it waited for a slot)."""
        assert self._sem is not None
        async with self._sem:
            if pq.dropped or self._closing:
                return None
            try:
                return succeeded(await self.handler(batch))
            except Exception:
                log.exception("handler failed on %d message(s); retrying later", len(batch))
                return False

    # ---- concurrent mode ---------------------------------------------------------------------

    async def _consume_run(self, pq: ProcessQueue, attempt: int, msgs: list[ReceivedMessage], n: int) -> None:
        """Attempt `attempt` of `msgs`, `n` per handler call, each batch marked
        done as it succeeds (a run's batches wait on the semaphore between
        calls, so a run may take long: the commit point follows it; marking
        once per run instead measured no faster). Closing stops before the
        next batch."""
        for i in range(0, len(msgs), n):
            batch = msgs[i : i + n]
            verdict = await self._call(pq, batch)
            if verdict is None:
                return
            if verdict:
                pq.done([m.queue_offset for m in batch])
                self.queues.count(consumed=len(batch))
            else:
                await self._failed(pq, batch, attempt)

    async def _failed(self, pq: ProcessQueue, batch: list[ReceivedMessage], attempt: int) -> None:
        """Attempt `attempt` of `batch` failed: back to the broker, or a local retry later."""
        retries, slots = self._retries, self._send_slots
        if self.settings.send_back and retries is not None and slots is not None:
            async with slots:  # the send-back threads' queue stays short: back-pressure on handlers
                sent = await self._sending.run(_send_back, retries, batch)
            pq.done([m.queue_offset for m, ok in zip(batch, sent, strict=True) if ok])
            batch = [m for m, ok in zip(batch, sent, strict=True) if not ok]
            if not batch:
                return
        self.queues.count(retried=1)
        if not self._closing:  # closing: not processed, so delivered again
            self._spawn(self._retry_later(pq, attempt + 1, batch), self._waiting)

    async def _retry_later(self, pq: ProcessQueue, attempt: int, batch: list[ReceivedMessage]) -> None:
        await asyncio.sleep(self.settings.retry_delay(attempt - 1))
        if not self._closing:
            self._spawn(self._consume_run(pq, attempt, batch, len(batch)), self._work)

    # ---- orderly mode ------------------------------------------------------------------------

    def _holds(self, mq: MessageQueue) -> bool:
        return self._locks is not None and self._locks.holds(mq)

    def _schedule_orderly(self, key: Key, pq: ProcessQueue) -> None:
        if pq.acquire():
            self._spawn(self._consume_orderly(key, pq), self._work)

    async def _consume_orderly(self, key: Key, pq: ProcessQueue) -> None:
        try:
            while not pq.dropped and not self._closing and self._holds(key[1]):
                batch = pq.take(self.settings.batch_size)
                if not batch:
                    break
                verdict = await self._call(pq, batch)
                if verdict is None:
                    pq.put_back(batch)
                    break
                if verdict:
                    pq.done([m.queue_offset for m in batch])
                    self.queues.count(consumed=len(batch))
                else:
                    pq.put_back(batch)
                    self.queues.count(retried=1)
                    await asyncio.sleep(self.settings.retry_backoff_s)
        finally:
            # the lock keeper's thread may be waiting for this queue to go idle
            if pq.release() and self._holds(key[1]) and not self._closing:
                self._schedule_orderly(key, pq)  # messages arrived meanwhile

    def _drop_cached(self, mq: MessageQueue) -> None:
        """Forget what was pulled of `mq` (its lock was just taken: it is read
        again from the group's commit). Runs on the lock keeper's thread."""
        pq = self.queues.forget((self.topic, mq))
        if pq is not None:
            pq.wait_idle(self.settings.shutdown_timeout_s)

    # ---- status and shutdown -------------------------------------------------------------------

    @property
    def sent_back(self) -> int:
        """Messages the brokers took back for a retry."""
        return 0 if self._retries is None else self._retries.sent_back

    @property
    def assignment(self) -> list[MessageQueue]:
        return self.pull.assignment

    async def close(self) -> None:
        """Stop pulling, finish (or after `shutdown_timeout_s` abandon) the
        handler calls in flight, commit what was processed, leave the group.
        The queue locks stay renewed until the final commit."""
        if self._closing:
            return
        self._closing = True
        stopped = True
        if self._loops:
            _, late = await asyncio.wait(self._loops, timeout=10)
            for task in late:
                task.cancel()
            # a loop still opening the retry topic has polled nothing: no loss
            if late and (self.retry is not None or self._loops[0] in late):
                log.warning("the dispatch loop did not stop in 10 s: closing without a commit")
                stopped = False
        for task in list(self._waiting):  # not started: delivered again
            task.cancel()
        if self._work:
            _, abandoned = await asyncio.wait(set(self._work), timeout=self.settings.shutdown_timeout_s)
            if abandoned:
                log.warning("abandoning %d batch(es) still running: delivered again", len(abandoned))
                for task in abandoned:
                    task.cancel()
                await asyncio.wait(abandoned, timeout=1)
        for task in list(self._waiting):  # started by a batch that failed meanwhile
            task.cancel()
        await self._sending.close()  # send backs and a retry topic opening: let them end
        await self._release_locks_and_close(stopped)

    async def _release_locks_and_close(self, commit: bool) -> None:
        locks = self._locks
        if self._lock_thread is not None and locks is not None:
            self._lock_stop.set()
            await asyncio.to_thread(self._lock_thread.join, 5)
            try:
                await asyncio.to_thread(locks.round)  # renewed just before the final commit
            except Exception:
                log.exception("renewing queue locks before the final commit failed")
        if self.retry is not None:
            await self.retry.close(commit=commit)
        elif self._retries is not None and self._retries.consumer is not None:  # opened as we closed
            await asyncio.to_thread(self._retries.consumer.close, False)
        held = locks.held() if locks is not None else []
        await self.pull.close(commit=commit)
        if held and locks is not None:  # committed: release them for the next owner
            await asyncio.to_thread(_unlock, locks, held)

    async def __aenter__(self) -> AsyncPushConsumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _is_coroutine_function(fn: object) -> bool:
    """`async def` functions, partials of them, objects with an `async def __call__`."""
    if inspect.iscoroutinefunction(fn):
        return True
    return callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _send_back(retries: SendBack, batch: list[ReceivedMessage]) -> list[bool]:
    """Each message of a failed batch back to its broker (a send-back thread):
    which ones the brokers took."""
    return [retries.send(m) for m in batch]


def _unlock(locks: QueueLocks, held: list[MessageQueue]) -> None:
    pool = ConnectionPool(5.0, locks.pull.security)  # the member's own pool is closed now
    try:
        locks.unlock(held, pool)
    finally:
        with contextlib.suppress(Exception):
            pool.close()
