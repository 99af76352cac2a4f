"""The official RocketMQ 5 Python client (`rocketmq-python-client` 5.1.2,
unmodified) driven from a JSON spec, for the conformance tests. Always run
in its own process (`python tests/helpers/rmq_client.py < spec.json`, with
HOME=<tmp>, TZ=UTC and, for TLS, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=<CA>):
importing `rocketmq` sets up logging under $HOME at import time, needs
opentelemetry and warns, so pytest itself never imports it.

Spec (stdin's first line): {"mode": "produce" | "simple" | "push",
"endpoints": "h:p", "ak": "", "sk": "", "tls": false, "topic": "T",
"timeout_s": 3, ...}. `produce` takes "messages": [{"body": "...", "tag":
"", "keys": [], "properties": {}, "group": "", "delivery_timestamp": 0,
"transaction": ""}] and prints per message `{"ok": true, "message_id",
"offset", "queue_id", "transaction_id"}` or `{"ok": false, "error"}`, with
the seconds each step took (a delivery timestamp in epoch seconds, as the
client takes it, makes a DELAY message). "transaction": "commit" or
"rollback" sends it in a transaction ended so; "orphan" leaves it open for
the server's check: the producer's checker (given with "check_commit", the
bodies it commits; it rolls back the rest) answers each check, listed under
"checked"; with "until_stdin_closes" the producer lives until then. `simple` and `push` take a
"group" (see each) and print every delivery. A push consumer runs until
stdin closes.

The streaming modes run until stdin closes and write each event as a JSON
line (flushed, with its wall-clock time `t`) to the file "log", so a test
reads them while the client runs: `stream` (a producer) sends numbered
bodies `<prefix>-<seq>` one at a time, one every "interval_s", and logs each
result; `simple_stream` (a SimpleConsumer) logs each delivery and each ack
(see each).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _checker(spec: dict[str, Any], checked: list[dict[str, Any]], lock: threading.Lock) -> Any:
    from rocketmq import TransactionChecker, TransactionResolution

    commit = set(spec.get("check_commit", []))

    class Checker(TransactionChecker):  # type: ignore[misc]
        def check(self, message: Any) -> Any:
            body = message.body.decode()
            with lock:
                checked.append({"body": body, "message_id": message.message_id})
            return TransactionResolution.COMMIT if body in commit else TransactionResolution.ROLLBACK

    return Checker()


def produce(spec: dict[str, Any]) -> dict[str, Any]:
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    creds = Credentials(spec.get("ak", ""), spec.get("sk", ""))
    cfg = ClientConfiguration(spec["endpoints"], creds, request_timeout=spec.get("timeout_s", 3))
    t0 = time.monotonic()
    checked: list[dict[str, Any]] = []
    lock = threading.Lock()
    txns = [m for m in spec["messages"] if m.get("transaction")]
    checker = _checker(spec, checked, lock) if txns else None
    producer = Producer(cfg, (spec["topic"],), checker=checker, tls_enable=spec.get("tls", False))
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
                end = m.get("transaction", "")
                txn = producer.begin_transaction() if end else None
                r = producer.send(msg, txn) if txn is not None else producer.send(msg)
                if txn is not None and end == "commit":
                    txn.commit()
                elif txn is not None and end == "rollback":
                    txn.rollback()
                queue = getattr(r.message_queue, "_MessageQueue__queue_id", None)  # no public getter
                results.append(
                    {
                        "ok": True, "message_id": r.message_id, "offset": r.offset, "queue_id": queue,
                        "transaction_id": r.transaction_id,
                    }
                )  # fmt: skip
            except Exception as exc:  # the client's exceptions: reported, the run goes on
                results.append({"ok": False, "error": _error(exc), "seconds": time.monotonic() - t})
        if spec.get("until_stdin_closes"):  # the checker answers the server's checks until then
            sys.stdin.read()
    finally:
        producer.shutdown()
    with lock:
        return {"startup_s": started, "results": results, "checked": list(checked)}


def _consumer_config(spec: dict[str, Any]) -> Any:
    from rocketmq import ClientConfiguration, Credentials

    creds = Credentials(spec.get("ak", ""), spec.get("sk", ""))
    return ClientConfiguration(spec["endpoints"], creds, request_timeout=spec.get("timeout_s", 3))


def _seen(m: Any) -> dict[str, Any]:
    return {
        "id": m.message_id, "body": m.body.decode(), "tag": m.tag or "", "keys": sorted(m.keys or ()),
        "properties": dict(m.properties or {}), "attempt": m.delivery_attempt, "corrupted": m.corrupted,
        "at": time.monotonic(),
    }  # fmt: skip


def simple(spec: dict[str, Any]) -> dict[str, Any]:
    """A SimpleConsumer that receives until `expect` messages are acked:
    the first message it gets is left unacked (it must come back after
    `invisible_s` as attempt 2, then is acked); the second has its
    invisible duration changed, an ack with the old handle is tried (it
    must fail), then the new handle acks it. With `plain`, it acks each at once."""
    from rocketmq import FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(
        _consumer_config(spec), spec["group"], {spec["topic"]: FilterExpression(spec.get("filter", "*"))},
        await_duration=spec.get("await_s", 5), tls_enable=spec.get("tls", False),
    )  # fmt: skip
    consumer.startup()
    deliveries: list[dict[str, Any]] = []
    acked: set[str] = set()
    held_back = changed = ""
    old_ack_error = errors = ""
    end = time.monotonic() + spec.get("deadline_s", 40)
    try:
        while len(acked) < spec["expect"] and time.monotonic() < end:
            try:
                got = consumer.receive(16, spec.get("invisible_s", 3))
            except Exception as exc:
                errors += _error(exc) + "\n"
                continue
            for m in got:
                deliveries.append(_seen(m))
                if not held_back and not spec.get("plain"):
                    held_back = m.message_id  # not acked: comes back after its invisible duration
                    continue
                if not changed and m.message_id != held_back and not spec.get("plain"):
                    changed, old = m.message_id, m.receipt_handle
                    consumer.change_invisible_duration(m, spec.get("change_s", 60))
                    new = m.receipt_handle
                    m.receipt_handle = old
                    try:
                        consumer.ack(m)
                        old_ack_error = "none"
                    except Exception as exc:
                        old_ack_error = _error(exc)
                    m.receipt_handle = new
                consumer.ack(m)
                acked.add(m.message_id)
    finally:
        consumer.shutdown()
    return {
        "deliveries": deliveries, "acked": sorted(acked), "held_back": held_back, "changed": changed,
        "old_ack_error": old_ack_error, "errors": errors,
    }  # fmt: skip


def push(spec: dict[str, Any]) -> dict[str, Any]:
    """A PushConsumer consuming until stdin closes; bodies in `fail` fail
    every time. Reports every delivery."""
    from rocketmq import ConsumeResult, FilterExpression, MessageListener, PushConsumer

    deliveries: list[dict[str, Any]] = []
    lock = threading.Lock()
    fail = set(spec.get("fail", ()))

    class Listener(MessageListener):  # type: ignore[misc]
        def consume(self, message: Any) -> Any:
            with lock:
                deliveries.append(_seen(message))
            return ConsumeResult.FAILURE if message.body.decode() in fail else ConsumeResult.SUCCESS

    consumer = PushConsumer(
        _consumer_config(spec), spec["group"], Listener(), {spec["topic"]: FilterExpression("*")},
        consumption_thread_count=2, tls_enable=spec.get("tls", False),
    )  # fmt: skip
    consumer.startup()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait(spec.get("deadline_s", 60))
    consumer.shutdown()
    with lock:
        return {"deliveries": list(deliveries)}


class _Log:
    """JSON lines, one per event, each flushed at once and stamped `t` (wall clock)."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.lock = threading.Lock()

    def write(self, **event: Any) -> None:
        with self.lock:
            self.f.write(json.dumps({**event, "t": time.time()}) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


def _until_stdin_closes() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    return stop


def stream(spec: dict[str, Any]) -> dict[str, Any]:
    """Sends `<prefix>-<seq>` (seq from 0) one at a time until stdin closes,
    one every `interval_s`; each result is a line `{"seq", "body", "ok",
    "message_id" | "error", "t0" (when the send began), "t"}`. An ok line
    is an acknowledged send."""
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    creds = Credentials(spec.get("ak", ""), spec.get("sk", ""))
    cfg = ClientConfiguration(spec["endpoints"], creds, request_timeout=spec.get("timeout_s", 3))
    producer = Producer(cfg, (spec["topic"],), tls_enable=spec.get("tls", False))
    producer.startup()
    out, stop = _Log(spec["log"]), _until_stdin_closes()
    seq = 0
    try:
        while not stop.is_set():
            msg = Message()
            msg.topic, msg.body = spec["topic"], f"{spec['prefix']}-{seq:06d}".encode()
            t0 = time.time()
            try:
                r = producer.send(msg)
                out.write(seq=seq, body=msg.body.decode(), ok=True, message_id=r.message_id, t0=t0)
            except Exception as exc:  # the client's exceptions: logged, the stream goes on
                out.write(seq=seq, body=msg.body.decode(), ok=False, error=_error(exc), t0=t0)
            seq += 1
            stop.wait(spec.get("interval_s", 0.05))
    finally:
        producer.shutdown()
        out.close()
    return {"sent": seq}


def simple_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """A SimpleConsumer receiving until stdin closes. Each delivery is a line
    `{"ev": "recv", "id", "body", "attempt", "handle"}`. A message whose body's number
    is `hold_phase` modulo `hold_every` is not acked on its first delivery
    (`{"ev": "hold", "handle"}`: it must come back after `invisible_s`); every other
    delivery is acked `ack_delay_s` after it was received, by one acker
    thread, one ack at a time: `{"ev": "ack", "id", "body", "handle",
    "ok", "error", "t0" (when the ack began)}`. Receive failures are lines
    `{"ev": "receive_error", "error"}`. Once stdin closes the acks due are made."""
    from rocketmq import FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(
        _consumer_config(spec), spec["group"], {spec["topic"]: FilterExpression("*")},
        await_duration=spec.get("await_s", 5), tls_enable=spec.get("tls", False),
    )  # fmt: skip
    consumer.startup()
    out, stop = _Log(spec["log"]), _until_stdin_closes()
    every, phase, delay = spec.get("hold_every", 0), spec.get("hold_phase", 0), spec.get("ack_delay_s", 0.0)
    due: list[tuple[float, Any]] = []  # (when to ack, the message), in order of receipt
    cond = threading.Condition()
    receiving = True

    def acker() -> None:
        while True:
            with cond:
                while receiving and (not due or due[0][0] > time.monotonic()):
                    cond.wait(max(0.01, due[0][0] - time.monotonic()) if due else None)
                if not due:
                    return
                _, m = due.pop(0)
            seen = {"id": m.message_id, "body": m.body.decode(), "handle": m.receipt_handle}
            t0 = time.time()
            try:
                consumer.ack(m)
                out.write(ev="ack", ok=True, t0=t0, **seen)
            except Exception as exc:  # refused or failed: the message must come back
                out.write(ev="ack", ok=False, error=_error(exc), t0=t0, **seen)

    ack_thread = threading.Thread(target=acker, name="acker")
    ack_thread.start()
    try:
        while not stop.is_set():
            try:
                got = consumer.receive(spec.get("batch", 16), spec.get("invisible_s", 4))
            except Exception as exc:  # logged; the loop asks again
                out.write(ev="receive_error", error=_error(exc))
                stop.wait(0.2)
                continue
            for m in got:
                body = m.body.decode()
                out.write(
                    ev="recv", id=m.message_id, body=body, attempt=m.delivery_attempt, handle=m.receipt_handle
                )
                if every and int(body.rsplit("-", 1)[1]) % every == phase and m.delivery_attempt == 1:
                    out.write(ev="hold", id=m.message_id, body=body, handle=m.receipt_handle)
                    continue
                with cond:
                    due.append((time.monotonic() + delay, m))
                    cond.notify()
    finally:
        with cond:
            receiving = False
            cond.notify()
        ack_thread.join()
        consumer.shutdown()
        out.close()
    return {}


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    modes = {
        "produce": produce,
        "simple": simple,
        "push": push,
        "stream": stream,
        "simple_stream": simple_stream,
    }
    result = modes[spec["mode"]](spec)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
