"""AsyncProducer: the producer for asyncio programs, on `grpc.aio`.

It drives the same send logic as `Producer` (consumer/send_logic.py: queue
choice, retry plan, circuit breaker, auto-create through a nameserver,
at-least-once accounting); only the I/O is asynchronous. Route lookups use
the threaded route classes: a fresh cached route is read without I/O, and a
lookup that needs the nameservers runs in a worker thread, so the event loop
never blocks on one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc

from consumer.aio.channels import AioStubs
from consumer.connection import rpc_error
from consumer.profile import Profile, client_setup
from consumer.routing import Routes, routes_for
from consumer.send_logic import (
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
)
from core.errors import TailraceError
from core.route import MessageQueue


class AsyncProducer:
    def __init__(
        self,
        broker: str | None = None,
        namesrv: Sequence[str] | str | None = None,
        timeout_s: float = 10.0,
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
        self.retry_timeout_s = retry_timeout_s
        self.logic = SendLogic(broker, selector, retries, retry_timeout_s, timeout_s, backoff_s, clock)
        self._stubs = AioStubs(security)

    async def send(
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
        return (await self.send_batch(topic, [msg], queue_id=queue_id, key=key))[0]

    async def send_batch(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
        queue: MessageQueue | None = None,
        timeout_s: float | None = None,
    ) -> list[SendReceipt]:
        """As `Producer.send_batch`: one RPC, one queue, retried within
        `timeout_s` (default and cap: `retry_timeout_s`). Run several at
        once with `asyncio.gather` for more in flight."""
        return await self._drive(self.logic.steps(topic, messages, queue, queue_id, key, timeout_s))

    async def _drive(self, steps: Steps) -> list[SendReceipt]:
        result: object = None
        try:
            while True:
                action = steps.send(result)
                result = await self._do(action)
        except StopIteration as done:
            receipts: list[SendReceipt] = done.value
            return receipts

    async def _do(self, action: Action) -> object:
        try:
            if isinstance(action, RouteLookup):
                route = None if action.refresh else self.routes.peek(action.topic)
                if route is None:
                    route = await asyncio.to_thread(
                        self.routes.get, action.topic, action.refresh, action.timeout_s
                    )
                return route
            if isinstance(action, Call):
                try:
                    return await self._stubs.get(action.address).SendBatch(
                        action.request, timeout=action.timeout_s
                    )
                except grpc.RpcError as exc:
                    return rpc_error(exc, action.address, self.security)
            if isinstance(action, AutoCreateLookup):
                return await asyncio.to_thread(self.routes.auto_create_route, action.topic, action.timeout_s)
            if isinstance(action, Pause):
                await asyncio.sleep(action.seconds)
                return None
        except TailraceError as err:
            return err
        raise TypeError(f"unknown action {action!r}")

    async def close(self) -> None:
        await self._stubs.close()
        self.routes.close()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
