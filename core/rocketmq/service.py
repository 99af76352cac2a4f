"""The `apache.rocketmq.v2.MessagingService` servicer of `tailrace proxy`:
unpack, check the caller, call the backend (the cluster, through our client
library), pack.

Outcomes travel as the v2 `Status` inside each response (official clients
read that, not gRPC's status): a refusal is an OK gRPC call whose status
says `UNAUTHORIZED`, `FORBIDDEN`, `BAD_REQUEST`, ... and nothing was done.
Every RPC the proxy does not serve yet answers `NOT_IMPLEMENTED` at once,
streams included (one status frame, then the end), so no client ever waits
on one. The proxy holds no state of its own: routes and limits come from
the cluster, every message goes to a master.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from core.errors import TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pb.rocketmq.v2 import service_pb2_grpc
from core.rocketmq import routes, translate
from core.rocketmq.calls import client_id as _client_id
from core.rocketmq.calls import past_deadline as _past_deadline
from core.rocketmq.calls import time_left as _time_left
from core.rocketmq.codes import (
    Refused,
    backend_status,
    not_implemented,
    roll_up,
    send_status,
    status,
    status_of,
)
from core.rocketmq.consume import ConsumeBackend, Consumption
from core.rocketmq.renew import Renewer
from core.rocketmq.settings import ServerSettings, answer
from core.rocketmq.streams import StreamGate
from core.rocketmq.transactions import Outbox, ProducerStreams, TransactionBackend, end_transaction
from core.roles import SendStatus
from core.route import MessageQueue, TopicRoute
from core.security.identity import Principal
from core.security.mqv2 import Mqv2Policy, Rule, any_account, publish, use_group

log = logging.getLogger(__name__)
MAX_MESSAGES_PER_REQUEST = 1024
DEFAULT_MAX_STREAMS = 32
DEFAULT_MAX_RECEIVES = 32  # as proxy.max_receives
DEFAULT_MAX_RECEIVES_PER_ACCOUNT = 16  # as proxy.max_receives_per_account


@dataclass(frozen=True, slots=True)
class Stored:
    """Where the backend stored a message."""

    status: SendStatus
    broker_name: str
    queue_id: int
    queue_offset: int
    transaction_id: str = ""  # a TRANSACTION message's (core/rocketmq/transactions.py)


class Backend(ConsumeBackend, TransactionBackend, Protocol):
    """The cluster as the servicer sees it (deploy/proxy_backend.py)."""

    def route(self, topic: str, timeout_s: float, refresh: bool = False) -> TopicRoute: ...

    def send(
        self, batch: list[translate.Incoming], queue: MessageQueue | None, timeout_s: float
    ) -> list[Stored]:
        """Store `batch` (one topic) in one queue with one RPC, all or none;
        `queue` None: the backend picks it. One `Stored` per message."""
        ...

    def max_body_bytes(self) -> int: ...


class LogBudget:
    """At most `lines` log lines per `window_s` (a flood of refused calls
    must not fill the disk); `allow` says whether this one may be written."""

    def __init__(self, lines: int = 10, window_s: float = 10.0) -> None:
        self.lines, self.window_s = lines, window_s
        self._start, self._used, self.dropped = -window_s, 0, 0
        self._lock = threading.Lock()

    def allow(self, now: float) -> bool:
        with self._lock:
            if now - self._start >= self.window_s:
                if self.dropped:
                    log.info("%d more refused calls were not logged", self.dropped)
                self._start, self._used, self.dropped = now, 0, 0
            if self._used < self.lines:
                self._used += 1
                return True
            self.dropped += 1
            return False


def _not_yet(name: str, response: Any) -> Callable[..., Any]:
    def unary(self: MessagingService, request: Any, context: grpc.ServicerContext) -> Any:
        return response(status=self._refusal(context, any_account) or not_implemented(name))

    return unary


def _not_yet_stream(name: str, response: Any) -> Callable[..., Any]:
    def stream(self: MessagingService, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield response(status=self._refusal(context, any_account) or not_implemented(name))

    return stream


class MessagingService(service_pb2_grpc.MessagingServiceServicer):
    def __init__(
        self,
        backend: Backend,
        policy: Mqv2Policy,
        endpoint: str,
        settings: Callable[[], ServerSettings],
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        streams: StreamGate | None = None,
        receives: StreamGate | None = None,
        renewer: Renewer | None = None,
        producers: ProducerStreams | None = None,
    ) -> None:
        """`endpoint`: where clients reach this proxy (`host:port`), the
        address every route names; `settings`: what clients are told (read
        per answer: the brokers' limit may change); `streams`: the cap on
        open Telemetry streams (each holds a server thread); `receives`: the
        cap on held receives (each holds one too); `renewer`: renews push
        consumers' messages while their client lives (None: not renewed;
        it learns the clients' life from Heartbeat and Telemetry here);
        `producers`: the producers' Telemetry streams orphan checks are
        pushed on (core/rocketmq/transactions.py)."""
        self.backend = backend
        self.policy = policy
        self.endpoints = routes.endpoints(endpoint)
        self.settings = settings
        self.wall_ms = wall_ms
        self.streams = streams or StreamGate(DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS)
        self._refusals = LogBudget()
        receives = receives or StreamGate(
            DEFAULT_MAX_RECEIVES, DEFAULT_MAX_RECEIVES_PER_ACCOUNT, "held receives"
        )
        self.renewer = renewer
        self.producers = producers or ProducerStreams()
        self.consumption = Consumption(
            backend, self._caller, self._backend_failed, self.endpoints, settings, receives, wall_ms,
            renewer=renewer,
        )  # fmt: skip

    def _caller(self, context: grpc.ServicerContext, rule: Rule) -> tuple[Principal | None, d.Status | None]:
        """(the caller, None) if it may go on; else (None, the status refusing it)."""
        try:
            return self.policy.check(context.invocation_metadata() or (), self.wall_ms(), rule), None
        except TailraceError as exc:
            if self._refusals.allow(time.monotonic()):
                log.info("refused a call from %s: %s", context.peer(), exc)
            return None, status_of(exc)

    def _backend_failed(self, exc: TailraceError, what: str) -> d.Status:
        """The status of a cluster's failure, told to a client without the
        cluster's own text (broker addresses stay here, in the log). The
        cluster refusing the proxy's own account is the operator's problem,
        not the client's: an error here, INTERNAL_SERVER_ERROR there."""
        answer = backend_status(exc)
        if answer.code == d.INTERNAL_SERVER_ERROR:
            log.error("%s failed in the cluster: %s", what, exc)
        elif self._refusals.allow(time.monotonic()):
            log.info("%s failed in the cluster: %s", what, exc)
        return answer

    def _refusal(self, context: grpc.ServicerContext, rule: Rule) -> d.Status | None:
        """None if the caller may go on; else the status refusing it."""
        return self._caller(context, rule)[1]

    # ---- served ----------------------------------------------------------------------

    def QueryRoute(self, request: s.QueryRouteRequest, context: grpc.ServicerContext) -> Any:
        refused = self._refusal(context, any_account)  # routes are not secret (as natively)
        if refused is not None:
            return s.QueryRouteResponse(status=refused)
        try:
            topic = translate.topic_of(request.topic)
            route = self.backend.route(topic, _time_left(context))
        except Refused as exc:
            return s.QueryRouteResponse(status=status_of(exc))
        except TailraceError as exc:
            return s.QueryRouteResponse(status=self._backend_failed(exc, f"route of {topic[:128]!r}"))
        queues = routes.message_queues(route, routes.asked_endpoints(request.endpoints) or self.endpoints)
        if not queues:
            return s.QueryRouteResponse(status=status(d.TOPIC_NOT_FOUND, f"topic {topic!r} has no queue"))
        return s.QueryRouteResponse(status=status(), message_queues=queues)

    def Heartbeat(self, request: s.HeartbeatRequest, context: grpc.ServicerContext) -> Any:
        refused = self._refusal(context, use_group(request.group.name))
        if refused is None and self.renewer is not None:
            self.renewer.table.seen(_client_id(context), time.monotonic())
        return s.HeartbeatResponse(status=refused or status())

    def NotifyClientTermination(
        self, request: s.NotifyClientTerminationRequest, context: grpc.ServicerContext
    ) -> Any:
        refused = self._refusal(context, use_group(request.group.name))
        return s.NotifyClientTerminationResponse(status=refused or status())

    def Telemetry(self, requests: Iterator[s.TelemetryCommand], context: grpc.ServicerContext) -> Any:
        """Answers each `settings` the client writes, completed, and writes
        what the proxy asks of the client (orphan checks, to producers);
        the stream stays open until the client (or this server's stop) ends
        it. Signed once, at open, as the clients do. The client's commands
        are read on a thread of their own; this handler writes the stream's
        outbox in order."""
        caller, refused = self._caller(context, any_account)
        if refused is not None or caller is None:
            yield s.TelemetryCommand(status=refused)
            return
        account = str(caller)
        full = self.streams.enter(account)
        if full is not None:
            yield s.TelemetryCommand(status=status(d.TOO_MANY_REQUESTS, full))
            return
        client = _client_id(context)
        if self.renewer is not None:  # its client lives while the stream is open
            self.renewer.table.opened(client)
        who = caller
        box = Outbox(client, lambda topic: self.policy.allows(who, self.wall_ms(), publish(topic)))
        reader = threading.Thread(target=self._read_telemetry, args=(requests, box), daemon=True)
        try:
            reader.start()
            yield from box.drain(context.is_active)
        finally:
            self.producers.closed(box)
            self.streams.leave(account)
            if self.renewer is not None:
                self.renewer.table.closed(client, time.monotonic())

    def _read_telemetry(self, requests: Iterator[s.TelemetryCommand], box: Outbox) -> None:
        try:
            for command in requests:
                if command.HasField("settings"):
                    try:
                        settings = answer(command.settings, self.settings())
                    except TailraceError as exc:
                        box.put(s.TelemetryCommand(status=status_of(exc)))
                        continue
                    self.producers.register(box, command.settings)
                    box.put(s.TelemetryCommand(status=status(), settings=settings))
                # other commands (thread stack traces, verification results) answer server requests
                # this proxy does not make: nothing to do
        except grpc.RpcError:  # the client cancelled the stream (its shutdown does): not an error
            pass
        except Exception:
            log.exception("reading a Telemetry stream of %s failed", box.client[:128])
        finally:
            self.producers.closed(box)
            box.end()

    def SendMessage(self, request: s.SendMessageRequest, context: grpc.ServicerContext) -> Any:
        """A request is stored whole or not at all: its messages go to one
        queue as one native batch (one RPC), as RocketMQ's proxy stores a
        batch. So a request names one topic and at most one message group
        (the official clients send so); anything else is refused before
        anything is stored."""
        ids = [m.system_properties.message_id for m in request.messages]
        if not request.messages:
            return s.SendMessageResponse(status=status(d.BAD_REQUEST, "no message to send"))
        if len(request.messages) > MAX_MESSAGES_PER_REQUEST:
            refusal = status(d.BAD_REQUEST, f"at most {MAX_MESSAGES_PER_REQUEST} messages per request")
            return _send_refused(refusal, ids)
        refused = self._refusal(context, any_account)  # an unproven caller learns nothing of its request
        if refused is not None:
            return _send_refused(refused, ids)
        try:
            topics = {translate.topic_of(m.topic) for m in request.messages}
        except Refused as exc:
            return _send_refused(status_of(exc), ids)
        if len(topics) != 1:
            return _send_refused(status(d.BAD_REQUEST, "one topic per request (a request is one batch)"), ids)
        topic = topics.pop()
        refused = self._refusal(context, publish(topic))
        if refused is not None:
            return _send_refused(refused, ids)
        try:
            batch = translate.batch(request.messages, self.settings().max_body_bytes, self.wall_ms())
            queue = None
            if batch[0].group:  # FIFO: the queue the client picked (it does not say which; the same hash)
                writable = routes.writable(self.backend.route(topic, _time_left(context)))
                queue = routes.fifo_queue(batch[0].group, writable)
            if _past_deadline(context):
                raise Refused(d.PROXY_TIMEOUT, "the client's deadline passed before the send")
            stored = self.backend.send(batch, queue, _time_left(context))
        except Refused as exc:
            return _send_refused(status_of(exc), ids)
        except TailraceError as exc:
            return _send_refused(self._backend_failed(exc, f"send to {topic[:128]!r}"), ids)
        except Exception:
            log.exception("sending %d message(s) to %s failed", len(ids), topic[:128])
            return _send_refused(status_of(RuntimeError()), ids)
        entries = [
            s.SendResultEntry(
                status=send_status(r), message_id=i, offset=r.queue_offset, transaction_id=r.transaction_id
            )
            for r, i in zip(stored, ids, strict=True)
        ]
        return s.SendMessageResponse(status=roll_up([e.status for e in entries]), entries=entries)

    def EndTransaction(self, request: s.EndTransactionRequest, context: grpc.ServicerContext) -> Any:
        return end_transaction(self.backend, request, context, self._caller, self._backend_failed)

    # ---- consumption: core/rocketmq/consume.py -------------------------------------------

    def QueryAssignment(self, request: s.QueryAssignmentRequest, context: grpc.ServicerContext) -> Any:
        return self.consumption.query_assignment(request, context)

    def ReceiveMessage(self, request: s.ReceiveMessageRequest, context: grpc.ServicerContext) -> Any:
        return self.consumption.receive_message(request, context)

    def AckMessage(self, request: s.AckMessageRequest, context: grpc.ServicerContext) -> Any:
        return self.consumption.ack_message(request, context)

    def ChangeInvisibleDuration(
        self, request: s.ChangeInvisibleDurationRequest, context: grpc.ServicerContext
    ) -> Any:
        return self.consumption.change_invisible_duration(request, context)

    def ForwardMessageToDeadLetterQueue(
        self, request: s.ForwardMessageToDeadLetterQueueRequest, context: grpc.ServicerContext
    ) -> Any:
        return self.consumption.forward_to_dead_letter(request, context)

    # ---- not served yet: an immediate NOT_IMPLEMENTED ----------------------------------

    PullMessage = _not_yet_stream("PullMessage", s.PullMessageResponse)
    UpdateOffset = _not_yet("UpdateOffset", s.UpdateOffsetResponse)
    GetOffset = _not_yet("GetOffset", s.GetOffsetResponse)
    QueryOffset = _not_yet("QueryOffset", s.QueryOffsetResponse)
    RecallMessage = _not_yet("RecallMessage", s.RecallMessageResponse)
    SyncLiteSubscription = _not_yet("SyncLiteSubscription", s.SyncLiteSubscriptionResponse)


def _send_refused(refusal: d.Status, ids: list[str]) -> s.SendMessageResponse:
    entries = [s.SendResultEntry(status=refusal, message_id=i) for i in ids]
    return s.SendMessageResponse(status=refusal, entries=entries)


def add_to_server(service: MessagingService, server: grpc.Server) -> None:
    service_pb2_grpc.add_MessagingServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
