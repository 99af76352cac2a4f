"""Transactions in the v2 protocol, on the proxy: `EndTransaction`, the
producers' Telemetry streams, and orphan checks pushed on them.

- A TRANSACTION `SendMessage` is a native send marked `TRAN_MSG=true`
  (translate.py): the master stores half messages and answers a
  transaction id per message, which the entry's `transaction_id` carries.
- `EndTransaction` (either source: the producer's own end, or its answer to
  a check) goes to the master of the broker group the id names, which
  checks the id and that the half is one of the request's topic (the
  caller's permission is to publish there).
- **Orphan checks.** Every open Telemetry stream has an outbox the stream's
  handler writes from (`Outbox`); a stream whose client says it is a
  PRODUCER registers the topics it publishes and its account may publish
  (`ProducerStreams`; checked again for each check, as the ACL may be
  reloaded).
  `OrphanPump` asks every master for the checks due of the topics its
  producers publish (PollOrphanTransactions) and writes each, as
  `RecoverOrphanedTransactionCommand{message, transaction_id}`, into the
  outbox of one live producer of its topic (round robin); the producer's
  checker answers with EndTransaction (`SOURCE_SERVER_CHECK`). Each check
  is reported back to its master with the next poll: delivered (counted
  toward its limit), or returned when no producer here could take it (the
  master hands it out again at once, maybe to another proxy).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from core.errors import TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.record import Record
from core.rocketmq import receive, translate
from core.rocketmq.calls import time_left
from core.rocketmq.codes import Refused, status, status_of
from core.security.identity import Principal
from core.security.mqv2 import Rule, publish

log = logging.getLogger(__name__)
OUTBOX_CAP = 256  # commands waiting to be written on one stream; past it checks go elsewhere
POLL_S = 1.0
POLL_MAX = 64  # checks taken from one master per round (a full round polls again at once)
POLL_BYTES = 8 << 20  # and their bytes at most
MAX_REPORTS = 4096  # ids reported to one master at once (more wait for the next round)


@dataclass(frozen=True, slots=True)
class Check:
    """An orphan check a master handed out: its half as it would be committed."""

    transaction_id: str
    record: Record  # its real topic and queue, the producer's fields
    store_host: str


@dataclass
class Report:
    """What became of the checks one master handed this proxy: told it with
    the next poll (a delivered check is counted, a returned one handed out
    again at once)."""

    delivered: list[str] = field(default_factory=list)  # transaction ids
    returned: list[str] = field(default_factory=list)


class TransactionBackend(Protocol):
    def end_transaction(
        self, topic: str, transaction_id: str, commit: bool, from_check: bool, timeout_s: float
    ) -> None: ...

    def poll_orphans(
        self,
        topics: frozenset[str],
        max_count: int,
        max_bytes: int,
        reports: dict[str, Report],
        timeout_s: float,
    ) -> list[Check]:
        """The checks of `topics` every master has due (at most `max_count`
        and `max_bytes` from each), each master told its report (taken out
        of `reports`, by its address: a master not reached keeps its own)."""
        ...


def check_message(c: Check) -> d.Message:
    """A check's half as the v2 message its producer's checker is given."""
    m = receive.message_of(c.record, 1, "", 0, c.store_host)
    sp = m.system_properties
    sp.message_type = d.TRANSACTION
    for name in ("receipt_handle", "delivery_attempt", "invisible_duration", "queue_offset"):
        sp.ClearField(name)
    return m


def _anyone(topic: str) -> bool:
    return True


@dataclass(eq=False)
class Outbox:
    """What the proxy writes on one Telemetry stream, in order; `None` ends
    it. `may_publish`: whether the stream's account may publish a topic now
    (the ACL in force: it may be reloaded while the stream lives)."""

    client: str
    may_publish: Callable[[str], bool] = _anyone
    topics: frozenset[str] = frozenset()
    items: queue.Queue[s.TelemetryCommand | None] = field(default_factory=queue.Queue)

    def put(self, command: s.TelemetryCommand) -> bool:
        if self.items.qsize() >= OUTBOX_CAP:
            return False
        self.items.put(command)
        return True

    def end(self) -> None:
        self.items.put(None)

    def drain(self, alive: Callable[[], bool], slice_s: float = 1.0) -> Iterator[s.TelemetryCommand]:
        """The commands to write, until `end` or the stream is gone."""
        while True:
            try:
                item = self.items.get(timeout=slice_s)
            except queue.Empty:
                if not alive():
                    return
                continue
            if item is None:
                return
            yield item


class ProducerStreams:
    """The open Telemetry streams of producers, by the topics they publish."""

    def __init__(self) -> None:
        self._streams: set[Outbox] = set()
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self.dropped = 0  # checks no producer here could take

    def register(self, box: Outbox, settings: d.Settings) -> None:
        """A stream's client told its settings: a producer's topics are
        noted, those its account may publish only (a check carries the
        half's body and its id); settings of another kind of client (or no
        topic it may publish) end its registration."""
        topics = frozenset(
            t.name for t in settings.publishing.topics if not t.resource_namespace and box.may_publish(t.name)
        )
        with self._lock:
            if settings.client_type != d.PRODUCER or not topics:
                self._streams.discard(box)
                return
            box.topics = topics
            self._streams.add(box)

    def closed(self, box: Outbox) -> None:
        with self._lock:
            self._streams.discard(box)

    def any(self) -> bool:
        with self._lock:
            return bool(self._streams)

    def topics(self) -> frozenset[str]:
        """The topics some producer stream here publishes: the checks worth asking for."""
        with self._lock:
            return frozenset().union(*(b.topics for b in self._streams))

    def offer(self, topic: str, command: s.TelemetryCommand) -> bool:
        """Write `command` on one producer stream publishing `topic` (round robin); False: none took it."""
        with self._lock:
            boxes = sorted((b for b in self._streams if topic in b.topics), key=id)
        boxes = [b for b in boxes if b.may_publish(topic)]  # (checked again: the ACL may have changed)
        if boxes:
            start = next(self._rr)
            for i in range(len(boxes)):
                if boxes[(start + i) % len(boxes)].put(command):
                    return True
        self.dropped += 1
        return False


class OrphanPump:
    """Every `poll_s`, while some producer stream is open: the masters'
    checks of the topics its producers publish, each pushed to a producer
    of its topic; what became of each is reported to its master with the
    next poll (delivered: counted toward its last check; returned: handed
    out again, to this proxy or another). A round that filled its batch
    polls again at once (a burst of orphans drains at the producers' pace)."""

    def __init__(self, backend: TransactionBackend, streams: ProducerStreams, poll_s: float = POLL_S) -> None:
        self.backend = backend
        self.streams = streams
        self.poll_s = poll_s
        self.pushed = 0
        self.more = False  # the last round filled a batch and pushed some: poll again at once
        self._reports: dict[str, Report] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-checks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0 if self.more else self.poll_s):
            self.more = False
            if not self.streams.any():
                continue
            try:
                self.run_once()
            except Exception:  # logged; the next round tries again
                log.exception("polling the masters for orphan checks failed")

    def run_once(self) -> int:
        topics = self.streams.topics()
        if not topics:
            return 0
        checks = self.backend.poll_orphans(topics, POLL_MAX, POLL_BYTES, self._reports, max(0.5, self.poll_s))
        pushed = 0
        per_master: dict[str, int] = {}
        for c in checks:
            command = s.TelemetryCommand(
                recover_orphaned_transaction_command=s.RecoverOrphanedTransactionCommand(
                    message=check_message(c), transaction_id=c.transaction_id
                )
            )
            report = self._reports.setdefault(c.store_host, Report())
            per_master[c.store_host] = per_master.get(c.store_host, 0) + 1
            if self.streams.offer(c.record.topic, command):
                pushed += 1
                report.delivered.append(c.transaction_id)
            else:  # its producers' outboxes are full, or they went: the master hands it out again
                report.returned.append(c.transaction_id)
        self.pushed += pushed
        self.more = pushed > 0 and any(n >= POLL_MAX for n in per_master.values())
        return pushed


def end_transaction(
    backend: TransactionBackend,
    request: s.EndTransactionRequest,
    context: grpc.ServicerContext,
    caller: Callable[[grpc.ServicerContext, Rule], tuple[Principal | None, d.Status | None]],
    failed: Callable[[TailraceError, str], d.Status],
) -> s.EndTransactionResponse:
    """The v2 EndTransaction: the caller publishes to the request's topic;
    the master of the id's broker group ends it."""
    try:
        topic = translate.topic_of(request.topic)
    except Refused as exc:
        return s.EndTransactionResponse(status=status_of(exc))
    refused = caller(context, publish(topic))[1]
    if refused is not None:
        return s.EndTransactionResponse(status=refused)
    if request.resolution not in (d.COMMIT, d.ROLLBACK):
        return s.EndTransactionResponse(status=status(d.BAD_REQUEST, "resolution must be COMMIT or ROLLBACK"))
    if not request.transaction_id:
        return s.EndTransactionResponse(status=status(d.INVALID_TRANSACTION_ID, "no transaction id"))
    from_check = request.source == d.SOURCE_SERVER_CHECK
    try:
        backend.end_transaction(
            topic, request.transaction_id, request.resolution == d.COMMIT, from_check, time_left(context)
        )
    except TailraceError as exc:
        return s.EndTransactionResponse(status=failed(exc, f"ending a transaction of {topic[:128]!r}"))
    return s.EndTransactionResponse(status=status())
