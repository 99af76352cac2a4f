"""Producer: route-aware sends over every writable queue of every group.

The logic of a send (queue choice, retries, circuit breaker, at-least-once
accounting) is `consumer/send_logic.py`, shared with `AsyncProducer`; this
class carries its actions out with blocking calls on a small thread pool.

Queue choice: round robin over the writable queues of every broker group
with a live master, or a user `selector(queues, key)` (e.g. by key, for
per-key order). A broker that just failed is avoided for `backoff_s` where
another group can take the send.

Retries follow `consumer/retry_plan.py` (a pure function of the failure, the
attempt and the clock): at once to another group up to `retries` times,
then with short pauses until the send's time is up (`retry_timeout_s`, or
the `timeout_s` given to the call, whichever is shorter): that rides out a
failover. No call blocks longer than that: every RPC's deadline is cut to
the time left. A broker that has failed for `retry_timeout_s` opens its
circuit (`consumer/circuit.py`): later sends to it fail at once, saying
why, until a probe gets through. A failure whose outcome was unknown (the
connection died mid-call, the deadline passed) may have stored the batch: a
retry then may store it twice (at least once, as in RocketMQ), and when
every attempt fails the caller gets `OutcomeUnknownError`. Bad input is
raised at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from consumer.connection import ConnectionPool
from consumer.profile import Profile, client_setup
from consumer.routing import Routes, routes_for
from consumer.send_logic import (
    MIN_RPC_TIMEOUT_S,
    Action,
    AutoCreateLookup,
    Call,
    OutgoingMessage,
    Pause,
    RouteLookup,
    Selector,
    SendLogic,
    SendReceipt,
    Steps,
    by_key,
)
from consumer.transactions import EndResult, TransactionClient
from core.errors import RequestTimeoutError, TailraceError
from core.route import MessageQueue
from core.transactions import PRODUCER_GROUP, TRAN_MSG

__all__ = ["OutgoingMessage", "Producer", "SendReceipt", "by_key"]


class Producer:
    def __init__(
        self,
        broker: str | None = None,
        namesrv: Sequence[str] | str | None = None,
        timeout_s: float = 10.0,
        max_in_flight: int = 4,
        selector: Selector | None = None,
        retries: int = 2,
        backoff_s: float = 5.0,
        retry_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        profile: str | Path | Profile | None = None,
    ) -> None:
        """`profile`: the client profile (consumer/profile.py; None:
        `$TAILRACE_PROFILE`, else plaintext); its nameservers are used when
        neither `broker` nor `namesrv` is given."""
        security, broker, namesrv = client_setup(profile, broker, namesrv)
        self.security = security
        self.routes: Routes = routes_for(broker, namesrv, security)
        self.pool = ConnectionPool(timeout_s, security)
        self.retry_timeout_s = retry_timeout_s
        self.clock = clock
        self.logic = SendLogic(broker, selector, retries, retry_timeout_s, timeout_s, backoff_s, clock)
        self.max_in_flight = max_in_flight
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="send")
        self._window = threading.BoundedSemaphore(max_in_flight)
        self.transactions = TransactionClient(self.routes, self.pool, clock)

    # ---- sending -----------------------------------------------------------------------

    def send(
        self,
        topic: str,
        body: bytes,
        tags: str = "",
        keys: str = "",
        properties: Mapping[str, str] | None = None,
        queue_id: int = -1,
        key: str | None = None,
        deliver_at_ms: int = 0,
    ) -> SendReceipt:
        """One message; `deliver_at_ms` (epoch ms, 0: now) delays its delivery
        (the master holds it until then, at most its broker.max_delay_ms ahead)."""
        msg = OutgoingMessage(body, tags, keys, properties, deliver_at_ms=deliver_at_ms)
        return self.send_batch(topic, [msg], queue_id=queue_id, key=key)[0]

    def send_transactional(
        self,
        topic: str,
        body: bytes,
        tags: str = "",
        keys: str = "",
        properties: Mapping[str, str] | None = None,
        producer_group: str = "",
        queue_id: int = -1,
        key: str | None = None,
    ) -> SendReceipt:
        """A half message: stored, invisible to consumers until
        `end_transaction` commits it (its receipt's `transaction_id` names
        it); rolled back by the broker after its orphan checks if never ended."""
        props = {**(properties or {}), TRAN_MSG: "true"}
        if producer_group:
            props[PRODUCER_GROUP] = producer_group
        receipt = self.send_batch(
            topic, [OutgoingMessage(body, tags, keys, props)], queue_id=queue_id, key=key
        )[0]
        if not receipt.transaction_id:
            raise TailraceError(f"the broker of {receipt.broker_name!r} stored no half message (too old?)")
        return receipt

    def end_transaction(
        self, topic: str, transaction_id: str, commit: bool, timeout_s: float | None = None
    ) -> EndResult:
        """Commit (the message is stored in `topic`, once) or roll back a
        transaction; ending it again the same way does nothing more."""
        return self.transactions.end(topic, transaction_id, commit, self.logic.limit(timeout_s))

    def send_batch(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
        queue: MessageQueue | None = None,
        timeout_s: float | None = None,
    ) -> list[SendReceipt]:
        """Store messages in one queue with one RPC.

        The queue is `queue` if given, else chosen (round robin, or the
        selector with `key`). `queue_id` other than -1 picks a queue id on a single
        broker (producer given `broker=`). Returns or raises within
        `timeout_s` (default and cap: `retry_timeout_s`).
        """
        return self._drive(self.logic.steps(topic, messages, queue, queue_id, key, timeout_s))

    def _drive(self, steps: Steps) -> list[SendReceipt]:
        """Carry out a send's actions (consumer/send_logic.py) with blocking calls."""
        result: object = None
        try:
            while True:
                action = steps.send(result)
                result = self._do(action)
        except StopIteration as done:
            receipts: list[SendReceipt] = done.value
            return receipts

    def _do(self, action: Action) -> object:
        try:
            if isinstance(action, RouteLookup):
                return self.routes.get(action.topic, refresh=action.refresh, timeout_s=action.timeout_s)
            if isinstance(action, Call):
                conn = self.pool.get(action.address)
                return conn.call(conn.stub.SendBatch, action.request, action.timeout_s)
            if isinstance(action, AutoCreateLookup):
                return self.routes.auto_create_route(action.topic, action.timeout_s)
            if isinstance(action, Pause):
                time.sleep(action.seconds)
                return None
        except TailraceError as err:
            return err
        raise TypeError(f"unknown action {action!r}")

    def send_batch_async(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
        timeout_s: float | None = None,
    ) -> Future[list[SendReceipt]]:
        """Like send_batch, without waiting for the answer; at most
        `max_in_flight` calls are outstanding. Waiting for room counts against
        `timeout_s` too (RequestTimeoutError when none was made in time)."""
        limit = self.logic.limit(timeout_s)
        t0 = self.clock()
        if not self._window.acquire(timeout=limit):
            raise RequestTimeoutError(f"{self.max_in_flight} sends still in flight after {limit:g} s")
        left = max(MIN_RPC_TIMEOUT_S, limit - (self.clock() - t0))
        fut = self._executor.submit(self.send_batch, topic, messages, queue_id, key, None, left)
        fut.add_done_callback(lambda _: self._window.release())
        return fut

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.pool.close()
        self.routes.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
