"""AsyncPullConsumer: a consumer-group member for asyncio programs.

The data path is asynchronous: pulls are `grpc.aio` calls, one long poll
in flight per assigned queue, driven through the same fetcher as the
threaded consumer (consumer/fetcher.py: which pulls to send, to which
broker, what each answer means), so redirect following, back-offs and
position moves are one piece of code. The control path (group membership,
rebalancing, the group's offsets, route lookups: a few calls a second at
most) is the threaded `PullConsumer`'s, used as this consumer's member: it
runs on this consumer's own control thread (consumer/aio/control.py), so
the event loop never blocks on it, and its heartbeat thread keeps the
membership alive. Only `poll()`
handles answers, as in the threaded consumer, so nothing changes state under
it.

    async with AsyncPullConsumer(namesrv=NS, group="g", topic="t") as c:
        async for message in c:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from consumer.aio.channels import AioStubs
from consumer.aio.control import ControlThreads
from consumer.connection import rpc_error
from consumer.fetcher import ReceivedMessage
from consumer.profile import ClientSecurity
from consumer.pull_consumer import PullConsumer
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue

Inflight = tuple[MessageQueue, int, Any, str]  # queue, generation, the aio call, address


class AsyncPullConsumer:
    def __init__(self, **member: Any) -> None:
        """Takes `PullConsumer`'s arguments (broker= or namesrv=, group, topic,
        subscription, start, long_poll_ms, max_messages, profile, ...). The
        pulls' channels have the member's security (its profile's)."""
        self._member_args = member
        self.member: PullConsumer | None = None
        self._control = ControlThreads("tailrace-consumer-control")
        self._stubs: AioStubs | None = None  # once the member (and so its security) is known
        self._tasks: dict[asyncio.Task[pb.PullResponse | TailraceError], Inflight] = {}
        self._buffer: list[ReceivedMessage] = []
        self._closed = False

    @classmethod
    def of(cls, member: PullConsumer) -> AsyncPullConsumer:
        """An async data path over a member already started (a push
        consumer's retry topic, opened in a worker thread)."""
        consumer = cls()
        consumer.member = member
        consumer._stubs = AioStubs(member.security)
        return consumer

    async def start(self) -> AsyncPullConsumer:
        """Join the group and take this member's queues (on the control
        thread). Cancelled or closed meanwhile: the member it was joining
        leaves the group again once it has joined."""
        if self._closed:
            raise TailraceError("consumer is closed")
        if self.member is None:
            joining = asyncio.ensure_future(self._control.run(PullConsumer, **self._member_args))
            try:
                member = await asyncio.shield(joining)
            except asyncio.CancelledError:
                joining.add_done_callback(_leave_when_joined)
                raise
            if self._closed:
                await asyncio.to_thread(member.close, False)
                raise TailraceError("consumer was closed while starting")
            self.member = member
            self._stubs = AioStubs(member.security)
        return self

    @property
    def _m(self) -> PullConsumer:
        if self.member is None:
            raise TailraceError("the consumer is not started (use `async with` or `await start()`)")
        return self.member

    @property
    def served_by(self) -> dict[int, int]:
        return dict(self._m.served_by)

    @property
    def assignment(self) -> list[MessageQueue]:
        return self._m.assignment

    # ---- polling ---------------------------------------------------------------------

    async def poll(self, timeout_ms: int = 1000) -> list[ReceivedMessage]:
        """Messages that arrived, waiting up to `timeout_ms` for the first."""
        if self._closed:
            raise TailraceError("consumer is closed")
        m = self._m
        m.raise_denied()  # a refusal of access met since the last poll (see PullConsumer.poll)
        await self._control.run(m.housekeeping)  # rebalance, auto-commit: the member's own
        self._issue()
        out: list[ReceivedMessage] = []
        answered: set[MessageQueue] = set()
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = deadline - time.monotonic()
            if self._tasks:
                done, _ = await asyncio.wait(
                    set(self._tasks), timeout=max(0.0, min(left, 0.2)), return_when=asyncio.FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(max(0.0, min(left, 0.05)))
                done = set()
            if not done:
                if left <= 0 or m._changed.is_set():
                    break
                self._issue(answered)  # queues whose retry back-off ended
                continue
            for task in done:
                mq, gen, call, address = self._tasks.pop(task)
                answered.add(mq)
                result = m._fetcher.answered(
                    mq, gen, call, task.result(), address, m._route, time.monotonic()
                )
                out.extend(result.records)
                if result.refresh_route:
                    m._changed.set()  # rebalance, which refreshes the route
            if not out:
                m.raise_denied()
            # a queue answered in this call is pulled again in the next one, after
            # the caller has taken these messages
            self._issue(answered)
            if out and not any(t.done() for t in self._tasks):
                break
        return out

    def _issue(self, skip: set[MessageQueue] | None = None) -> None:
        m = self._m
        stubs = self._stubs
        assert stubs is not None  # set with the member
        loop = asyncio.get_running_loop()
        with m._queues.lock:  # nothing moves a position between choosing a pull and sending it
            for p in m._fetcher.due(m._route, time.monotonic(), skip):
                call = _LoopCall(stubs.get(p.address).Pull(p.request, timeout=p.timeout_s), loop)
                gen = m._queues.issued(p.mq, call)
                answer = _answer(call.call, p.address, stubs.security)
                self._tasks[asyncio.ensure_future(answer)] = (p.mq, gen, call, p.address)

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReceivedMessage]:
        while not self._closed:
            if not self._buffer:
                self._buffer = await self.poll(1000)
                continue
            yield self._buffer.pop(0)

    # ---- offsets and lifecycle -------------------------------------------------------------

    async def commit(self, positions: dict[int, int] | None = None) -> None:
        await self._control.run(self._m.commit, positions)

    async def close(self, commit: bool = True) -> None:
        """Stop pulling, commit what was polled (unless told not to), leave the group."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self.member is not None:
            await self._control.run(self.member.close, commit)
        await self._control.close()
        if self._stubs is not None:
            await self._stubs.close()

    async def __aenter__(self) -> AsyncPullConsumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _leave_when_joined(joining: asyncio.Future[PullConsumer]) -> None:
    """A start was cancelled while its member was joining: once joined, it leaves."""
    if not joining.cancelled() and joining.exception() is None:
        member = joining.result()
        threading.Thread(target=member.close, args=(False,), name="tailrace-leave", daemon=True).start()


class _LoopCall:
    """An aio call as the positions see a pull in flight: the member may
    cancel it from a worker thread (a rebalance), so the cancel is handed to
    the event loop that owns the call."""

    def __init__(self, call: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.call = call
        self.loop = loop

    def cancel(self) -> bool:
        self.loop.call_soon_threadsafe(self.call.cancel)
        return True

    def cancelled(self) -> bool:
        return bool(self.call.cancelled())


async def _answer(call: Any, address: str, security: ClientSecurity) -> pb.PullResponse | TailraceError:
    """A pull's answer, or the error it failed with (cancelled: the same)."""
    try:
        resp: pb.PullResponse = await call
        return resp
    except grpc.RpcError as exc:
        return rpc_error(exc, address, security)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            call.cancel()
        return TailraceError("cancelled")
