"""The producer's behaviour that matters, against real brokers, for both
clients: the threaded `Producer` and the asyncio `AsyncProducer` (they share
consumer/send_logic.py; these tests check each one's I/O carries it out)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from consumer import Admin, Producer
from consumer.aio import AsyncProducer
from core.errors import BrokerUnavailableError, OutcomeUnknownError, TailraceError
from deploy.harness import ProcessGroup
from deploy.waits import poll_until, wait_routed

pytestmark = pytest.mark.integration
CLIENTS = ["threads", "asyncio"]


def run_with(kind: str, scenario: Callable[[Callable[..., Any]], Any], **producer: Any) -> Any:
    """Run `scenario(send)` with a producer of `kind`; `send(topic, bodies)`
    is a blocking call either way (asyncio: on one event loop, in a thread's
    view the same)."""
    if kind == "threads":
        with Producer(**producer) as p:
            return scenario(lambda topic, bodies: p.send_batch(topic, bodies))

    async def main() -> Any:
        async with AsyncProducer(**producer) as p:
            loop = asyncio.get_running_loop()

            def send(topic: str, bodies: list[bytes]) -> Any:
                fut: Awaitable[Any] = asyncio.run_coroutine_threadsafe(p.send_batch(topic, bodies), loop)
                return fut.result(timeout=60)  # type: ignore[attr-defined]  # a send never takes this long

            return await asyncio.to_thread(scenario, send)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_dead_broker_opens_the_circuit_and_a_probe_closes_it(kind: str, procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("T", 2)

    def scenario(send: Callable[..., Any]) -> None:
        assert send("T", [b"before"])[0].status == "SEND_OK"
        b.kill()
        t0 = time.monotonic()
        with pytest.raises((BrokerUnavailableError, OutcomeUnknownError)):  # the first try may meet the kill
            send("T", [b"x"])  # retried for retry_timeout_s, then given up
        first = time.monotonic() - t0
        assert 2.5 < first < 3.0 + 1.5, first
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=r"circuit open|cannot write"):
            send("T", [b"y"])  # open: at once
        assert time.monotonic() - t0 < 0.5
        b.restart()

        def probed() -> bool:
            try:
                return bool(send("T", [b"after"])[0].status == "SEND_OK")
            except TailraceError:
                return False

        poll_until(probed, 15, "a probe to get through")

    run_with(kind, scenario, broker=b.address, retry_timeout_s=3.0)


@pytest.mark.parametrize("kind", CLIENTS)
def test_sends_ride_over_a_dead_group(kind: str, procs: ProcessGroup) -> None:
    c = procs.cluster(("ga", "gb"), topic="T", queues=2)
    errors: list[Exception] = []
    sent: Counter[str] = Counter()

    def scenario(send: Callable[..., Any]) -> None:
        def one(i: int) -> None:
            try:
                sent[send("T", [f"p{i}".encode()] * 5)[0].broker_name] += 1
            except TailraceError as exc:
                errors.append(exc)

        i = 0
        deadline = time.monotonic() + 30
        while sent["ga"] < 20 or sent["gb"] < 20:
            assert time.monotonic() < deadline, f"sends to both groups: {dict(sent)}"
            one(i := i + 1)
        c.groups["gb"].master.kill()
        before = sent["ga"]
        deadline = time.monotonic() + 20
        while sent["ga"] < before + 100:
            assert time.monotonic() < deadline, "sends did not continue on ga"
            one(i := i + 1)

    run_with(kind, scenario, namesrv=c.namesrv)
    assert errors == [], errors[:3]
    wait_routed(c.namesrv, "T", groups=["ga"], timeout_s=15, what="gb dropped from the routes")
