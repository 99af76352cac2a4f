"""The consume-side v2 RPCs of `tailrace proxy`: QueryAssignment,
ReceiveMessage, AckMessage, ChangeInvisibleDuration (and, with the brokers'
PopDeadLetter, ForwardMessageToDeadLetterQueue), over the masters' native
pop RPCs. The servicer (service.py) hands these calls here.

- **Receive** pops from the broker group the request's queue names, any
  queue of it (-1), as RocketMQ's proxy pops by broker name. The stream is
  a status frame, one frame per message, then a `delivery_timestamp`
  frame; nothing after the long poll is `MESSAGE_NOT_FOUND`. A held
  receive holds a server thread (the sync server), so at most
  `max_receives` are open at once, and at most `max_per_account` of one
  account's (so one cannot take them all); past that `TOO_MANY_REQUESTS`
  at once.
  A receive keeps its place until its last frame is written, and its
  frames must be written within `write_s` (grpc's sync server blocks a
  thread on a client that does not read): past it the call is cancelled
  and the batch given back (visible again in 1 s). So is a batch whose
  stream breaks before its last frame is written, all of it: the official
  client throws away every message of a receive that ends in an error.
- **Ack** groups its entries by the broker group each handle names (in
  clear text before its MAC) and makes one native AckPop per group; each
  entry gets its own status (`INVALID_RECEIPT_HANDLE` for a stale or
  forged handle: the push consumer then gives up on it).
- **ChangeInvisibleDuration** answers the new handle; on a failure, the old
  one (the official client takes the answer's handle before it reads the
  status, so an empty one would lose the message's handle).

Every call needs subscribe on the topic as the group (`mqv2.consume`), as
the native Pop does. The masters keep all pop state: any proxy serves any
call.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from core.broker_config import BROKER_NAME
from core.errors import InvalidReceiptError, TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pop.handles import broker_of
from core.pop.ops import PoppedMessage
from core.rocketmq import receive, routes, translate
from core.rocketmq.calls import client_id, past_deadline, time_left
from core.rocketmq.codes import Refused, roll_up, status, status_of
from core.rocketmq.renew import Renewer
from core.rocketmq.settings import ServerSettings
from core.rocketmq.streams import DeadlineWatch, StreamGate
from core.route import TopicRoute
from core.security.identity import Principal
from core.security.mqv2 import Rule, any_account, consume

log = logging.getLogger(__name__)
GROUP_NAME = re.compile(r"[a-zA-Z0-9_-]{1,255}")  # the official clients' (less `%`: the broker's names)
MAX_ACK_ENTRIES = 1024
MIN_POLL_S = 0.1  # less long-poll time left than this: answer what there is
GIVE_BACK_MS = 1_000  # messages popped for a client that left come back this soon (RocketMQ's too)
GIVE_BACK_S = 2.0  # the most a receive spends giving its batch back
WRITE_S = 10.0  # the most a receive's frames may take to be written (a client that does not read)


@dataclass(frozen=True)
class Popped:
    messages: list[PoppedMessage]
    store_host: str  # the master that handed them out
    held: bool  # the master held the pop (False with nothing: it holds its most long polls)


class ConsumeBackend(Protocol):
    """The masters' pop state as the proxy reaches it (deploy/proxy_backend.py)."""

    def route(self, topic: str, timeout_s: float, refresh: bool = False) -> TopicRoute:
        """The topic's route (cached; `refresh`: asked of the nameservers again)."""
        ...

    def pop(
        self,
        broker_name: str,
        group: str,
        topic: str,
        invisible_ms: int,
        wait_ms: int,
        max_messages: int,
        tag_expression: str,
        timeout_s: float,
    ) -> Popped: ...

    def ack(
        self, broker_name: str, group: str, topic: str, handles: Sequence[str], timeout_s: float
    ) -> list[TailraceError | None]:
        """One outcome per handle (None: acked); one native call."""
        ...

    def change_invisible(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> str:
        """The new handle."""
        ...

    def dead_letter(self, broker_name: str, group: str, topic: str, handle: str, timeout_s: float) -> None:
        """Store the handed-out message in the group's DLQ and settle it."""
        ...

    def renew(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> int:
        """Keep the handle's message invisible a while longer, the handle
        unchanged (the renewer's); its deadline in wall-clock ms."""
        ...


# (the caller, None) if it may go on; else (None, the status refusing it)
Caller = Callable[[grpc.ServicerContext, Rule], tuple[Principal | None, d.Status | None]]
Failed = Callable[[TailraceError, str], d.Status]  # a cluster's failure as a client's status


def group_of(resource: d.Resource) -> str:
    if resource.resource_namespace:
        raise Refused(d.UNSUPPORTED, "resource namespaces are not supported by Tailrace")
    if not GROUP_NAME.fullmatch(resource.name):
        raise Refused(d.ILLEGAL_CONSUMER_GROUP, f"consumer group {resource.name[:100]!r} is not a valid name")
    return resource.name


class Consumption:
    def __init__(
        self,
        backend: ConsumeBackend,
        caller: Caller,
        failed: Failed,
        endpoints: d.Endpoints,
        settings: Callable[[], ServerSettings],
        receives: StreamGate,
        wall_ms: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        writes: DeadlineWatch | None = None,
        write_s: float = WRITE_S,
        renewer: Renewer | None = None,
    ) -> None:
        """`writes`: the watch bounding each receive's writes to `write_s`;
        `renewer`: renews auto_renew receives' messages (None: not renewed)."""
        self.backend = backend
        self.renewer = renewer
        self.writes = writes or DeadlineWatch()
        self.write_s = write_s
        self.clock = clock
        self.caller = caller
        self.failed = failed
        self.endpoints = endpoints
        self.settings = settings
        self.receives = receives
        self.wall_ms = wall_ms

    def check(self, context: grpc.ServicerContext, rule: Rule) -> d.Status | None:
        return self.caller(context, rule)[1]

    def _admit(
        self, context: grpc.ServicerContext, topic: d.Resource, group: d.Resource
    ) -> tuple[str, str, str, d.Status | None]:
        """(the caller's account, topic, group, None) if the caller may
        consume them; else the status refusing it. The caller is proven
        before its request is read (an unproven one learns nothing of it),
        then checked on the names."""
        who, refused = self.caller(context, any_account)
        if refused is not None:
            return "", "", "", refused
        try:
            t, g = translate.topic_of(topic), group_of(group)
        except Refused as exc:
            return "", "", "", status_of(exc)
        return str(who), t, g, self.check(context, consume(t, g))

    def _brokers(
        self,
        topic: str,
        names: set[str],
        context: grpc.ServicerContext,
        unknown: Refused | None = None,
    ) -> dict[str, d.Status | None]:
        """Per broker group a request names (a handle's, a queue's): None if
        the topic's route has it with a live master; else the status to
        answer. A name that is not a broker group's, or not one of the
        topic's even after one refresh of the route (one per call, however
        many names), is `unknown` (INVALID_RECEIPT_HANDLE by default): no
        backend call, no further route lookup. A group without a live
        master is HA_NOT_AVAILABLE."""
        why = unknown.code if unknown is not None else d.INVALID_RECEIPT_HANDLE
        out: dict[str, d.Status | None] = {}
        for n in names:
            if not BROKER_NAME.fullmatch(n):
                out[n] = status(why, f"{n[:64]!r} is not a broker group's name")
        wanted = names - out.keys()
        if not wanted:
            return out
        try:
            route = self.backend.route(topic, time_left(context))
            if any(route.group(n) is None for n in wanted) and not past_deadline(context):
                route = self.backend.route(topic, time_left(context), refresh=True)
        except TailraceError as exc:
            failed = self.failed(exc, f"route of {topic[:128]!r}")
            return {**out, **dict.fromkeys(wanted, failed)}
        for n in wanted:
            g = route.group(n)
            if g is None:
                out[n] = status(why, f"broker group {n!r} does not serve topic {topic[:128]!r}")
            elif g.master is None:
                out[n] = status(d.HA_NOT_AVAILABLE, f"broker group {n!r} has no live master now")
            else:
                out[n] = None
        return out

    # ---- QueryAssignment ----------------------------------------------------------------

    def query_assignment(
        self, request: s.QueryAssignmentRequest, context: grpc.ServicerContext
    ) -> s.QueryAssignmentResponse:
        _, topic, _, refused = self._admit(context, request.topic, request.group)
        if refused is not None:
            return s.QueryAssignmentResponse(status=refused)
        try:
            route = self.backend.route(topic, time_left(context))
        except TailraceError as exc:
            return s.QueryAssignmentResponse(status=self.failed(exc, f"route of {topic[:128]!r}"))
        proxy = routes.asked_endpoints(request.endpoints) or self.endpoints
        assigned = receive.assignments(route, proxy)
        if not assigned:
            why = status(d.HA_NOT_AVAILABLE, f"no readable broker group of {topic!r} has a live master")
            return s.QueryAssignmentResponse(status=why)
        return s.QueryAssignmentResponse(status=status(), assignments=assigned)

    # ---- ReceiveMessage -----------------------------------------------------------------

    def receive_message(
        self, request: s.ReceiveMessageRequest, context: grpc.ServicerContext
    ) -> Iterator[s.ReceiveMessageResponse]:
        account, topic, group, refused = self._admit(context, request.message_queue.topic, request.group)
        if refused is not None:
            yield s.ReceiveMessageResponse(status=refused)
            return
        server = self.settings()
        broker = request.message_queue.broker.name
        try:
            if not broker:
                raise Refused(d.BAD_REQUEST, "the message queue names no broker")
            tags = receive.tag_expression(request.filter_expression)
            invisible = receive.invisible_ms(request, server)
            polling = receive.polling_ms(request, server, int(time_left(context) * 1000))
        except Refused as exc:
            yield s.ReceiveMessageResponse(status=status_of(exc))
            return
        bad = self._brokers(topic, {broker}, context, Refused(d.BAD_REQUEST, ""))[broker]
        if bad is not None:
            yield s.ReceiveMessageResponse(status=bad)
            return
        full = self.receives.enter(account)
        if full is not None:
            yield s.ReceiveMessageResponse(status=status(d.TOO_MANY_REQUESTS, full))
            return
        try:  # the place is held until the last frame is written (or the stream ends)
            batch_size = min(max(request.batch_size, 1), receive.MAX_BATCH)
            renew = request.auto_renew and self.renewer is not None
            yield from self._receive(
                broker, group, topic, invisible, polling, batch_size, tags, context, renew
            )
        finally:
            self.receives.leave(account)

    def _receive(
        self,
        broker: str,
        group: str,
        topic: str,
        invisible: int,
        polling: int,
        batch_size: int,
        tags: str,
        context: grpc.ServicerContext,
        renew: bool,
    ) -> Iterator[s.ReceiveMessageResponse]:
        try:
            popped, popped_at = self._pop(broker, group, topic, invisible, polling, batch_size, tags, context)
        except TailraceError as exc:
            yield s.ReceiveMessageResponse(
                status=self.failed(exc, f"receive from {broker[:64]}/{topic[:128]}")
            )
            return
        done = s.ReceiveMessageResponse()
        done.delivery_timestamp.FromMilliseconds(self.wall_ms())
        if not popped.messages:
            if popped.held:
                yield s.ReceiveMessageResponse(status=status(d.MESSAGE_NOT_FOUND, "no new message"))
            else:
                yield s.ReceiveMessageResponse(status=status(d.TOO_MANY_REQUESTS, "polling full; try later"))
            yield done
            return
        if not context.is_active():  # the client left meanwhile: give them back soon
            self._give_back(broker, group, topic, popped.messages)
            return
        frames = [s.ReceiveMessageResponse(status=status())]
        for m in popped.messages:
            message = receive.message_of(m.record, m.attempt, m.handle, invisible, popped.store_host)
            frames.append(s.ReceiveMessageResponse(message=message))
        frames.append(done)
        late = threading.Event()

        def too_late() -> None:  # the client did not read in time: the call ends, its thread is freed
            late.set()
            context.cancel()

        token = self.writes.arm(self.clock() + self.write_s, too_late)
        written = False
        try:
            yield from frames  # each frame is written before the next is asked for
            written = True  # grpc asked past the last frame: all of it went out
            if renew and self.renewer is not None:  # renewed while its client lives, until settled
                handles = [m.handle for m in popped.messages]
                self.renewer.track(client_id(context), broker, group, topic, handles, popped_at)
        finally:
            self.writes.disarm(token)
            if not written:  # too late, or the stream broke: the official client drops the whole
                self._give_back(broker, group, topic, popped.messages)  # batch, so all of it comes back

    def _pop(
        self,
        broker: str,
        group: str,
        topic: str,
        invisible_ms: int,
        polling_ms: int,
        batch_size: int,
        tags: str,
        context: grpc.ServicerContext,
    ) -> tuple[Popped, float]:
        """Pop until something comes, the long poll ends or the client
        leaves: a master may hold a pop less long than asked (its
        pull.max_wait_ms), so the proxy asks again while time is left.
        With the time the last pop started (its messages' invisibility
        counts from after it)."""
        end = self.clock() + polling_ms / 1000
        held = False  # a master held one of these pops: it was not at its cap
        while True:
            started = self.clock()
            wait_s = end - started
            out = self.backend.pop(
                broker, group, topic, invisible_ms, int(max(wait_s, 0) * 1000), batch_size, tags,
                time_left(context),
            )  # fmt: skip
            held = held or out.held
            if out.messages or not out.held or end - self.clock() < MIN_POLL_S or not context.is_active():
                return Popped(out.messages, out.store_host, held), started

    def _give_back(self, broker: str, group: str, topic: str, messages: list[PoppedMessage]) -> None:
        """Messages a client did not get come back in 1 s (RocketMQ's proxy
        nacks so what it could not write), within GIVE_BACK_S in all (the
        receive's place is held meanwhile); the rest after their invisible time."""
        end = self.clock() + GIVE_BACK_S
        for m in messages:
            left = end - self.clock()
            if left <= 0:
                log.info("%d popped message(s) not given back in time", len(messages))
                return
            try:
                self.backend.change_invisible(broker, group, topic, m.handle, GIVE_BACK_MS, left)
            except TailraceError as exc:  # it comes back after its invisible time instead
                log.info("could not give back a message popped for a client that left: %s", exc)

    # ---- AckMessage ---------------------------------------------------------------------

    def ack_message(
        self, request: s.AckMessageRequest, context: grpc.ServicerContext
    ) -> s.AckMessageResponse:
        entries = list(request.entries)
        _, topic, group, refused = self._admit(context, request.topic, request.group)
        if refused is None and not 1 <= len(entries) <= MAX_ACK_ENTRIES:
            refused = status(d.BAD_REQUEST, f"an ack has 1..{MAX_ACK_ENTRIES} entries, not {len(entries)}")
        if refused is not None:
            return _acked(entries, [refused] * len(entries), refused)
        outcome: list[d.Status] = [status()] * len(entries)
        by_broker: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            try:
                by_broker.setdefault(broker_of(e.receipt_handle), []).append(i)
            except InvalidReceiptError as exc:
                outcome[i] = status_of(exc)
        checked = self._brokers(topic, set(by_broker), context)
        for broker, idxs in by_broker.items():
            refused = checked[broker]
            if refused is None and past_deadline(context):
                refused = status(d.PROXY_TIMEOUT, "the client's deadline passed before this entry's ack")
            if refused is not None:
                for i in idxs:
                    outcome[i] = refused
                continue
            try:
                errors = self.backend.ack(
                    broker, group, topic, [entries[i].receipt_handle for i in idxs], time_left(context)
                )
                for i, err in zip(idxs, errors, strict=True):
                    outcome[i] = status() if err is None else status_of(err)
                    if err is None or isinstance(err, InvalidReceiptError):
                        self._settled(entries[i].receipt_handle)
            except TailraceError as exc:
                failed = self.failed(exc, f"ack on {broker[:64]}/{topic[:128]}")
                for i in idxs:
                    outcome[i] = failed
        return _acked(entries, outcome, roll_up(outcome))

    # ---- ChangeInvisibleDuration --------------------------------------------------------

    def change_invisible_duration(
        self, request: s.ChangeInvisibleDurationRequest, context: grpc.ServicerContext
    ) -> s.ChangeInvisibleDurationResponse:
        handle = request.receipt_handle
        _, topic, group, refused = self._admit(context, request.topic, request.group)
        if refused is not None:
            return s.ChangeInvisibleDurationResponse(status=refused, receipt_handle=handle)
        try:
            ms = receive.checked_invisible(request.invisible_duration.ToMilliseconds())
            broker = broker_of(handle)
            bad = self._brokers(topic, {broker}, context)[broker]
            if bad is not None:
                return s.ChangeInvisibleDurationResponse(status=bad, receipt_handle=handle)
            new = self.backend.change_invisible(broker, group, topic, handle, ms, time_left(context))
        except InvalidReceiptError as exc:
            self._settled(handle)
            return s.ChangeInvisibleDurationResponse(status=status_of(exc), receipt_handle=handle)
        except Refused as exc:
            return s.ChangeInvisibleDurationResponse(status=status_of(exc), receipt_handle=handle)
        except TailraceError as exc:
            failed = self.failed(exc, f"change invisible on {topic[:128]}")
            return s.ChangeInvisibleDurationResponse(status=failed, receipt_handle=handle)
        self._settled(handle)  # the client chose its invisibility: the new handle is not renewed
        return s.ChangeInvisibleDurationResponse(status=status(), receipt_handle=new)

    # ---- ForwardMessageToDeadLetterQueue -----------------------------------------------------

    def forward_to_dead_letter(
        self, request: s.ForwardMessageToDeadLetterQueueRequest, context: grpc.ServicerContext
    ) -> s.ForwardMessageToDeadLetterQueueResponse:
        """A FIFO push consumer's last local retry failed: the message goes to
        `%DLQ%<group>` and is settled (the client evicts it without an ack,
        so the broker's PopDeadLetter acks it). The client's delivery counts
        are not trusted: the broker records its own."""
        _, topic, group, refused = self._admit(context, request.topic, request.group)
        if refused is not None:
            return s.ForwardMessageToDeadLetterQueueResponse(status=refused)
        try:
            broker = broker_of(request.receipt_handle)
            bad = self._brokers(topic, {broker}, context)[broker]
            if bad is not None:
                return s.ForwardMessageToDeadLetterQueueResponse(status=bad)
            self.backend.dead_letter(broker, group, topic, request.receipt_handle, time_left(context))
        except InvalidReceiptError as exc:
            self._settled(request.receipt_handle)
            return s.ForwardMessageToDeadLetterQueueResponse(status=status_of(exc))
        except TailraceError as exc:
            failed = self.failed(exc, f"dead letter on {topic[:128]}")
            return s.ForwardMessageToDeadLetterQueueResponse(status=failed)
        self._settled(request.receipt_handle)
        return s.ForwardMessageToDeadLetterQueueResponse(status=status())

    def _settled(self, handle: str) -> None:
        """Acked, changed, forwarded or dead: no longer renewed."""
        if self.renewer is not None:
            self.renewer.forget(handle)


def _acked(entries: list[s.AckMessageEntry], outcome: list[d.Status], top: d.Status) -> s.AckMessageResponse:
    out = [
        s.AckMessageResultEntry(message_id=e.message_id, receipt_handle=e.receipt_handle, status=st)
        for e, st in zip(entries, outcome, strict=True)
    ]
    return s.AckMessageResponse(status=top, entries=out)
