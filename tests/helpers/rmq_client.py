"""The official RocketMQ 5 Python client (`rocketmq-python-client` 5.1.2,
unmodified) driven from a JSON spec, for the conformance tests. Always run
in its own process (`python tests/helpers/rmq_client.py < spec.json`, with
HOME=<tmp>, TZ=UTC and, for TLS, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=<CA>):
importing `rocketmq` sets up logging under $HOME at import time, needs
opentelemetry and warns, so pytest itself never imports it.

Spec (stdin): {"mode": "produce" | "receive", "endpoints": "h:p", "ak": "",
"sk": "", "tls": false, "topic": "T", "timeout_s": 3,
"messages": [{"body": "...", "tag": "", "keys": [], "properties": {},
"group": "", "delivery_timestamp": 0}], "group": "G"} (a delivery
timestamp in epoch seconds, as the client takes it, makes a DELAY
message). Prints one JSON object: per message `{"ok": true, "message_id",
"offset", "queue_id"}` or `{"ok": false, "error"}`, with the seconds each
step took.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def produce(spec: dict[str, Any]) -> dict[str, Any]:
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    creds = Credentials(spec.get("ak", ""), spec.get("sk", ""))
    cfg = ClientConfiguration(spec["endpoints"], creds, request_timeout=spec.get("timeout_s", 3))
    t0 = time.monotonic()
    producer = Producer(cfg, (spec["topic"],), tls_enable=spec.get("tls", False))
    producer.startup()
    started = time.monotonic() - t0
    results = []
    try:
        for m in spec["messages"]:
            msg = Message()
            msg.topic = spec["topic"]
            msg.body = m["body"].encode()
            if m.get("tag"):
                msg.tag = m["tag"]
            if m.get("keys"):
                type(msg).keys.fset(msg, *m["keys"])  # the setter takes several keys
            for k, v in m.get("properties", {}).items():
                msg.add_property(k, v)
            if m.get("group"):
                msg.message_group = m["group"]
            if m.get("delivery_timestamp"):
                msg.delivery_timestamp = m["delivery_timestamp"]
            t = time.monotonic()
            try:
                r = producer.send(msg)
                queue = getattr(r.message_queue, "_MessageQueue__queue_id", None)  # no public getter
                results.append(
                    {"ok": True, "message_id": r.message_id, "offset": r.offset, "queue_id": queue}
                )
            except Exception as exc:  # the client's exceptions: reported, the run goes on
                results.append({"ok": False, "error": _error(exc), "seconds": time.monotonic() - t})
    finally:
        producer.shutdown()
    return {"startup_s": started, "results": results}


def receive(spec: dict[str, Any]) -> dict[str, Any]:
    """One SimpleConsumer receive (not served yet: the proxy answers NOT_IMPLEMENTED)."""
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

    creds = Credentials(spec.get("ak", ""), spec.get("sk", ""))
    cfg = ClientConfiguration(spec["endpoints"], creds, request_timeout=spec.get("timeout_s", 3))
    consumer = SimpleConsumer(
        cfg, spec["group"], {spec["topic"]: FilterExpression("*")}, await_duration=5,
        tls_enable=spec.get("tls", False),
    )  # fmt: skip
    consumer.startup()
    t = time.monotonic()
    try:
        got = consumer.receive(16, 15)
        out: dict[str, Any] = {"ok": True, "count": len(got)}
    except Exception as exc:
        out = {"ok": False, "error": _error(exc)}
    out["seconds"] = time.monotonic() - t
    consumer.shutdown()
    return out


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result = produce(spec) if spec["mode"] == "produce" else receive(spec)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
