"""The official RocketMQ 5 Python client (`rocketmq-python-client`,
unmodified) as a benchmark load, in its own process:

    python bench/rmq_official.py < spec.json

(with HOME=<tmp>: importing `rocketmq` sets up its logging under $HOME).
Spec: {"mode": "produce" | "receive", "endpoints": "h:p", "topic": "T",
"count": N, ...}. `produce`: "size", "window" (sends in flight). `receive`:
a SimpleConsumer of "group" receiving batches of "batch" messages and
acking each (`ack` on "window" threads: 5.1.2's `ack_async` drops its
future, and the future its inner `_ack_async` returns fails with
InvalidStateError) until "count" distinct messages arrived or "seconds" pass. Prints
one JSON line: counts, seconds, msgs/s (from the client started to the last
message or ack), and for `receive` how many bodies were whole ("size"
bytes, digest checked) and how many arrived twice (by message id; one sent by our native client
has none: by its numbered body).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _config(spec: dict[str, Any]) -> Any:
    from rocketmq import ClientConfiguration, Credentials  # type: ignore[import-untyped]

    return ClientConfiguration(
        spec["endpoints"], Credentials("", ""), request_timeout=spec.get("timeout_s", 10)
    )


def produce(spec: dict[str, Any]) -> dict[str, Any]:
    from rocketmq import Message, Producer

    producer = Producer(_config(spec), (spec["topic"],))
    producer.startup()
    body = b"x" * spec.get("size", 1024)
    window = spec.get("window", 1)
    sent = errors = 0
    t0 = time.monotonic()
    try:
        pending: deque[Any] = deque()
        for _ in range(spec["count"]):
            msg = Message()
            msg.topic = spec["topic"]
            msg.body = body
            if window <= 1:
                producer.send(msg)
                sent += 1
                continue
            pending.append(producer.send_async(msg))
            while len(pending) >= window:
                try:
                    pending.popleft().result()
                    sent += 1
                except Exception:
                    errors += 1
        for f in pending:
            try:
                f.result()
                sent += 1
            except Exception:
                errors += 1
        seconds = time.monotonic() - t0
    finally:
        producer.shutdown()
    return {"sent": sent, "errors": errors, "seconds": round(seconds, 2), "msgs_per_s": round(sent / seconds)}


def receive(spec: dict[str, Any]) -> dict[str, Any]:
    from rocketmq import FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(
        _config(spec),
        spec["group"],
        {spec["topic"]: FilterExpression("*")},
        await_duration=spec.get("await_s", 5),
    )
    consumer.startup()
    size, window = spec.get("size", 1024), spec.get("window", 16)
    seen: set[str] = set()
    whole = dup = acked = 0
    errors: list[str] = []
    t0 = time.monotonic()
    end = t0 + spec.get("seconds", 60)
    pending: deque[Any] = deque()

    def settle(keep: int) -> None:
        nonlocal acked
        while len(pending) > keep:
            try:
                pending.popleft().result()
                acked += 1
            except Exception as exc:
                errors.append(f"ack: {type(exc).__name__}: {exc}"[:300])

    acks = ThreadPoolExecutor(max_workers=window)
    try:
        while len(seen) < spec["count"] and time.monotonic() < end:
            try:
                got = consumer.receive(spec.get("batch", 32), spec.get("invisible_s", 60))
            except Exception as exc:
                errors.append(f"receive: {type(exc).__name__}: {exc}"[:300])
                continue
            for m in got:
                key = m.message_id or bytes(m.body[:24]).decode()  # (sent natively: no id, a numbered body)
                if key in seen:
                    dup += 1
                seen.add(key)
                whole += len(m.body) == size and not m.corrupted
                pending.append(acks.submit(consumer.ack, m))
            settle(window)
        settle(0)
        last = time.monotonic()
    finally:
        acks.shutdown()
        consumer.shutdown()
    span = max(last - t0, 1e-6)
    return {
        "received": len(seen) + dup, "distinct": len(seen), "whole": whole, "duplicates": dup, "acked": acked,
        "errors": len(errors), "error_sample": errors[:3], "seconds": round(span, 2),
        "msgs_per_s": round(len(seen) / span),
    }  # fmt: skip


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    out = produce(spec) if spec["mode"] == "produce" else receive(spec)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
