"""`tailrace produce | consume`: the end-to-end verification tools (`topic`
and the other admin commands: deploy/admin_cli.py).

Bodies that `produce` writes start with `<run id>:<sequence number>:`, so
`consume` (and drills) can tell every message apart and check that each
acknowledged one arrived. `--log` writes one JSON line per acknowledged
(produce) or received (consume) message; a produce line's `t` is when the
answer arrived (wall clock, s) and `sent` when its batch was handed to the
producer (drills measure send stalls from them).

Each command takes `--profile FILE` (default: `$TAILRACE_PROFILE`), the
client profile of consumer/profile.py: TLS and the account that signs, and
the nameservers when neither `--broker` nor `--namesrv` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

import psutil

from consumer import Producer, PullConsumer, PushConsumer, ReceivedMessage
from consumer.producer import OutgoingMessage, SendReceipt
from consumer.profile import ENV, Profile
from core.errors import ConfigError, TailraceError
from core.route import MessageQueue


class Progress:
    """A one-line progress report on a terminal (stderr), silent when piped."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.enabled = sys.stderr.isatty()
        self._last = 0.0
        self._t0 = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.5:
            return
        self._last = now
        rate = done / max(1e-9, now - self._t0)
        sys.stderr.write(f"\r{self.what}: {done:,}/{self.total:,} ({rate:,.0f}/s)   ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def make_body(run_id: str, seq: int, size: int) -> bytes:
    head = f"{run_id}:{seq}:".encode()
    return head + b"x" * max(0, size - len(head))


def parse_body(body: bytes) -> tuple[str, int] | None:
    """(run id, sequence number) of a body `make_body` wrote, else None."""
    i = body.find(b":", 0, 64)
    j = body.find(b":", i + 1, i + 24) if i >= 0 else -1
    if j < 0 or not body[i + 1 : j].isdigit():
        return None
    return body[:i].decode(errors="replace"), int(body[i + 1 : j])


def _target(p: argparse.ArgumentParser) -> None:
    t = p.add_mutually_exclusive_group()
    t.add_argument("--broker", help="one broker, HOST:PORT")
    t.add_argument("--namesrv", help="nameserver addresses, comma-separated (default: the profile's)")
    p.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help=f"client profile: TLS, account, nameservers (default: ${ENV})",
    )


class TargetError(Exception):
    """A command's profile or target is wrong; the message says which and why."""


def client_target(args: argparse.Namespace) -> tuple[Profile, str | None, str | None]:
    """(profile, broker, namesrv) of a client command: `--profile`, else
    `$TAILRACE_PROFILE`; the profile's nameservers when neither `--broker`
    nor `--namesrv` was given. Raises `TargetError` naming the profile (and
    where it came from) when it is bad, or when there is nothing to connect to."""
    path = args.profile or os.environ.get(ENV, "")
    source = "--profile" if args.profile else f"${ENV}"
    try:
        profile = Profile.load(path) if path else Profile()
    except ConfigError as exc:
        field = exc.key.removeprefix(f"profile {Path(path)}").lstrip(": ")  # the file is named once
        raise TargetError(
            f"bad client profile {path} (from {source}): {field + ': ' if field else ''}{exc.reason}"
        ) from None
    broker, namesrv = args.broker, args.namesrv
    if broker is None and namesrv is None:
        if not profile.namesrv:
            where = (
                f"; the profile {path} names no namesrv" if path else f" (or a profile: --profile, ${ENV})"
            )
            raise TargetError(f"give --broker or --namesrv{where}")
        namesrv = ",".join(profile.namesrv)
    return profile, broker, namesrv


ClientRun = Callable[[argparse.Namespace, Profile, str | None, str | None], int]


def _run_with_target(run: ClientRun) -> Callable[[argparse.Namespace], int]:
    """A command's run function, which first works out its profile and target
    (an error there: said on stderr naming the profile, exit status 2)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            target = client_target(args)
        except TargetError as exc:
            print(f"tailrace {getattr(args, 'command', 'client')}: {exc}", file=sys.stderr)
            return 2
        return run(args, *target)

    return wrapped


def add_produce_arguments(p: argparse.ArgumentParser) -> None:
    _target(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=1024, help="body bytes")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--queue", type=int, default=-1, help="-1: the broker picks per batch")
    p.add_argument("--tags", default="")
    p.add_argument("--in-flight", type=int, default=4, help="batches outstanding at once")
    p.add_argument("--rate", type=float, default=0, help="messages per second (0: as fast as possible)")
    p.add_argument("--run-id", default=None)
    p.add_argument("--log", type=argparse.FileType("w"), default=None)
    p.add_argument("--json", action="store_true")


@_run_with_target
def run_produce(args: argparse.Namespace, profile: Profile, broker: str | None, namesrv: str | None) -> int:
    run_id = args.run_id or uuid.uuid4().hex[:12]
    if args.count < 0 or args.batch < 1 or args.size < 0 or args.rate < 0:
        print("tailrace produce: --count >= 0, --batch >= 1, --size >= 0, --rate >= 0", file=sys.stderr)
        return 2
    log: IO[str] | None = args.log
    lock = threading.Lock()
    ok = failed = 0
    errors: dict[str, int] = {}
    first_errors: dict[str, str] = {}  # the first message of each error code, shown on stderr
    failing_since: list[float] = []  # when sends began to fail with no success since

    def record(seqs: range, sent: float, fut: Future[list[SendReceipt]]) -> None:
        nonlocal ok, failed
        try:
            receipts = fut.result()
        except TailraceError as exc:
            with lock:
                failed += len(seqs)
                errors[exc.code] = errors.get(exc.code, 0) + len(seqs)
                if len(errors) == 1 and errors[exc.code] == len(seqs):  # the first: say it now
                    print(f"tailrace produce: {exc} (failures from here on are counted)", file=sys.stderr)
                first_errors.setdefault(exc.code, str(exc))
                if not failing_since:
                    failing_since.append(time.monotonic())
            return
        lines = []
        now = round(time.time(), 4)
        for seq, r in zip(seqs, receipts, strict=True):
            if log is not None:
                lines.append(
                    json.dumps(
                        {
                            "run": run_id,
                            "seq": seq,
                            "queue": r.queue_id,
                            "offset": r.queue_offset,
                            "id": r.message_id,
                            "status": r.status,
                            "broker": r.broker_name,
                            "epoch": r.epoch,
                            "address": r.address,
                            "t": now,
                            "sent": sent,
                        }
                    )
                )
        with lock:
            failing_since.clear()
            ok += sum(1 for r in receipts if r.status == "SEND_OK")
            failed += sum(1 for r in receipts if r.status != "SEND_OK")
            if log is not None:
                log.write("\n".join(lines) + "\n")
                log.flush()  # a killed process leaves every line it acknowledged

    t0 = time.perf_counter()
    with Producer(broker, namesrv=namesrv, max_in_flight=args.in_flight, profile=profile) as producer:
        pending: list[Future[list[SendReceipt]]] = []
        progress = Progress("produced", args.count)
        paced_from = time.monotonic()
        for start in range(0, args.count, args.batch):
            progress.update(ok + failed)
            with lock:  # failing for a whole retry timeout with no success: give the rest up
                hopeless = (
                    bool(failing_since) and time.monotonic() - failing_since[0] >= producer.retry_timeout_s
                )
            if hopeless:
                left = args.count - start
                with lock:
                    failed += left
                    errors["GIVEN_UP"] = errors.get("GIVEN_UP", 0) + left
                print(f"tailrace produce: giving up the {left} messages not sent yet", file=sys.stderr)
                break
            if args.rate:  # pace: batch n leaves no earlier than n*batch/rate seconds in
                ahead = paced_from + start / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            seqs = range(start, min(args.count, start + args.batch))
            bodies = [make_body(run_id, s, args.size) for s in seqs]
            if args.tags:
                msgs: list[Any] = [OutgoingMessage(b, tags=args.tags) for b in bodies]
            else:
                msgs = bodies
            sent = round(time.time(), 4)
            try:
                fut = producer.send_batch_async(args.topic, msgs, args.queue)
            except TailraceError as exc:  # no room in the window in time: counted like a failed send
                fut = Future()
                fut.set_exception(exc)
            fut.add_done_callback(functools.partial(record, seqs, sent))
            pending.append(fut)
        for fut in pending:
            with contextlib.suppress(TailraceError):  # counted in record()
                fut.result()
        progress.done()
    elapsed = time.perf_counter() - t0
    if log is not None:
        log.close()
    summary = {
        "run_id": run_id,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(ok / elapsed) if elapsed > 0 else 0,
    }
    for text in list(first_errors.values())[1:]:  # the first one was said when it happened
        print(f"tailrace produce: {text}", file=sys.stderr)
    _report(summary, args.json)
    return 0 if failed == 0 else 1


def add_consume_arguments(p: argparse.ArgumentParser) -> None:
    _target(p)
    p.add_argument("--group", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True, help="stop after this many distinct")
    p.add_argument("--from", dest="start", choices=["first", "last"], default="first")
    p.add_argument("--subscription", default="*")
    p.add_argument("--timeout-ms", type=int, default=30_000, help="give up after this long")
    p.add_argument("--batch", type=int, default=256, help="messages per pull")
    p.add_argument("--heartbeat-ms", type=int, default=3000, help="group membership heartbeat")
    p.add_argument("--rebalance-ms", type=int, default=20000, help="periodic rebalance")
    p.add_argument(
        "--threads", type=int, default=None, help="a push consumer with this many processing threads"
    )
    p.add_argument("--handler-ms", type=float, default=0, help="simulated processing cost per message")
    p.add_argument("--max-cached", type=int, default=1000, help="push: unprocessed messages per queue")
    p.add_argument("--consume-batch", type=int, default=1, help="push: messages per handler call")
    p.add_argument(
        "--max-span", type=int, default=2000, help="push: oldest unprocessed to newest pulled, per queue"
    )
    p.add_argument(
        "--client-id", default=None, help="this member's id in the group (default: host@pid@random)"
    )
    p.add_argument("--log", type=argparse.FileType("w"), default=None)
    p.add_argument("--json", action="store_true")


@_run_with_target
def run_consume(args: argparse.Namespace, profile: Profile, broker: str | None, namesrv: str | None) -> int:
    if (args.threads is not None and args.threads < 1) or args.handler_ms < 0:
        print("tailrace consume: --threads >= 1, --handler-ms >= 0", file=sys.stderr)
        return 2
    log: IO[str] | None = args.log
    seen: set[tuple[str, int] | tuple[int, int]] = set()
    counts = {"received": 0, "duplicates": 0}
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = time.monotonic() + args.timeout_ms / 1000
    span = [0.0, 0.0]  # first and last delivery (perf_counter)

    def record(batch: list[ReceivedMessage]) -> None:
        lines = []
        now = time.perf_counter()
        with lock:
            span[0] = span[0] or now
            span[1] = now
            for m in batch:
                counts["received"] += 1
                ident = parse_body(m.body)
                key: tuple[str, int] | tuple[int, int] = (
                    ident if ident is not None else (m.queue_id, m.queue_offset)
                )
                if key in seen:
                    counts["duplicates"] += 1
                else:
                    seen.add(key)
                if log is not None:
                    lines.append(
                        json.dumps(
                            {
                                "run": ident[0] if ident else None,
                                "seq": ident[1] if ident else None,
                                "queue": m.queue_id,
                                "offset": m.queue_offset,
                                "broker": m.broker_name,
                            }
                        )
                    )
            if log is not None and lines:
                log.write("\n".join(lines) + "\n")
                log.flush()

    def log_commit(mq: MessageQueue, offset: int) -> None:
        if log is not None:  # the drill checks no delivery goes back below a commit
            with lock:
                log.write(
                    json.dumps({"commit": offset, "broker": mq.broker_name, "queue": mq.queue_id}) + "\n"
                )
                log.flush()

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():  # SIGTERM: stop, commit, leave
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def running() -> bool:
        return len(seen) < args.count and time.monotonic() < deadline and not stop.is_set()

    progress = Progress("consumed", args.count)
    rss_max = 0
    me = psutil.Process()
    extra: dict[str, Any] = {}
    unreachable: dict[str, str] = {}
    if args.threads is None and not args.handler_ms:
        with PullConsumer(
            broker,
            args.group,
            args.topic,
            namesrv=namesrv,
            profile=profile,
            subscription=args.subscription,
            start=args.start,
            max_messages=args.batch,
            heartbeat_ms=args.heartbeat_ms,
            rebalance_interval_ms=args.rebalance_ms,
            auto_commit_interval_ms=1000,
            on_commit=log_commit,
            client_id=args.client_id,
            route_timeout_s=max(0.0, deadline - time.monotonic()),  # a topic being created: wait
        ) as consumer:
            while running():
                progress.update(len(seen))
                left_ms = int((deadline - time.monotonic()) * 1000)
                batch = consumer.poll(max(1, min(200, left_ms)))
                if batch:
                    record(batch)
            served = consumer.served_by
            unreachable = dict(consumer.unreachable)
    else:
        cost_s = args.handler_ms / 1000

        def handler(batch: list[ReceivedMessage]) -> None:
            if cost_s:
                time.sleep(cost_s * len(batch))  # the simulated processing cost
            record(batch)

        push = PushConsumer(
            args.group,
            args.topic,
            handler,
            args.subscription,
            broker=broker,
            namesrv=namesrv,
            profile=profile,
            consume_threads=args.threads or 20,
            batch_size=args.consume_batch,
            max_span=args.max_span,
            start=args.start,
            pull_batch=min(args.batch, 1000),
            max_cached_messages=args.max_cached,
            heartbeat_ms=args.heartbeat_ms,
            rebalance_interval_ms=args.rebalance_ms,
            on_commit=log_commit,
            client_id=args.client_id,
            route_timeout_s=max(0.0, deadline - time.monotonic()),
        )
        try:
            cached_max = 0
            while running():
                progress.update(len(seen))
                cached_max = max(cached_max, push.cached()[0])
                rss_max = max(rss_max, me.memory_info().rss)
                stop.wait(0.05)
            served = push.pull.served_by
            unreachable = dict(push.pull.unreachable)
            extra = {
                "threads": args.threads or 20,
                "handler_ms": args.handler_ms,
                "consume_batch": args.consume_batch,
                "cached_max": cached_max,
            }
        finally:
            push.close()
    progress.done()
    if log is not None:
        log.close()
    elapsed = span[1] - (span[0] or t0)
    summary = {
        "received": counts["received"],
        "unique": len(seen),
        "duplicates": counts["duplicates"],
        "seconds": round(time.perf_counter() - t0, 3),
        "msgs_per_s": round(counts["received"] / elapsed) if elapsed > 0 else 0,
        "served_by": {str(k): v for k, v in served.items()},
        "rss_max_mb": round(max(rss_max, me.memory_info().rss) / 2**20, 1),
        **extra,
    }
    _report(summary, args.json)
    if len(seen) >= args.count:
        return 0
    if unreachable:  # say what kept it from its count
        where = "; ".join(f"{a} ({why})" for a, why in sorted(unreachable.items()))
        got = f"{len(seen)} of {args.count} in {args.timeout_ms} ms"
        print(f"tailrace consume: {got}; could not reach {where}", file=sys.stderr)
    return 1


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        print("  ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
