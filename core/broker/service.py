"""gRPC adapter for the broker: unpack the request, call the core (or its
leader role), pack.

No decisions here: which role serves what is `core/access.py`'s table,
enforced before a handler runs; failures are TailraceErrors that the error
interceptor (core/grpc_server.py) turns into gRPC statuses.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from core.broker.core import BrokerCore
from core.broker.role import SendOutcome
from core.errors import InvalidArgumentError, NotMasterError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.pull import PullArgs
from core.record import Message
from core.roles import SendStatus
from core.store import ReadStatus
from core.transactions import Outcome, Wanted

log = logging.getLogger(__name__)
_PULL_STATUS = {
    ReadStatus.FOUND: pb.FOUND,
    ReadStatus.NO_NEW_MSG: pb.NO_NEW_MSG,
    ReadStatus.NO_MATCHED_MSG: pb.NO_MATCHED_MSG,
    ReadStatus.OFFSET_TOO_SMALL: pb.OFFSET_TOO_SMALL,
    ReadStatus.OFFSET_OVERFLOW: pb.OFFSET_OVERFLOW,
}
_RESOLUTIONS = {pb.COMMIT: Outcome.COMMIT, pb.ROLLBACK: Outcome.ROLLBACK}
_SENDS = ("/tailrace.v1.Broker/Send", "/tailrace.v1.Broker/SendBatch")


def _message(m: pb.Message) -> Message:
    return Message(
        "",
        0,
        m.body,
        tags=m.tags,
        keys=m.keys,
        properties=dict(m.properties) if m.properties else None,
        flags=m.flags,
        born_ms=m.born_ms,
        deliver_at_ms=m.deliver_at_ms,
    )


class BrokerService(broker_pb2_grpc.BrokerServicer):
    def __init__(self, core: BrokerCore) -> None:
        self.core = core

    def refuse(self, method: str) -> pb.SendResponse:
        """A follower's answer to a leader-only method (core/access.LeaderGuard):
        a send gets the NOT_MASTER status naming the master, as a demoted
        master's does; everything else NotMasterError."""
        if method in _SENDS:
            master = self.core.role.master_address
            detail = f"writes go to the master at {master}" if master else "no master known yet"
            return self._response(SendOutcome(SendStatus.NOT_MASTER, "", 0, [], detail, master))
        raise self.core.not_master()

    def _response(self, out: SendOutcome) -> pb.SendResponse:
        return pb.SendResponse(
            status=out.status.value,  # the enum value is its protobuf name
            topic=out.topic,
            queue_id=out.queue_id,
            broker_name=self.core.broker_name,
            queue_offsets=[q for _, q in out.results],
            physical_offsets=[p for p, _ in out.results],
            served_by=self.core.broker_id,
            master_address=out.master_address,
            detail=out.detail,
            epoch=out.epoch,
            transaction_ids=out.transaction_ids,
        )

    def _send(self, topic: str, queue_id: int, messages: list[Message]) -> pb.SendResponse:
        try:
            leader = self.core.leader()
        except NotMasterError:  # demoted since the guard let it through: the same answer
            return self.refuse(_SENDS[0])
        return self._response(leader.send(topic, queue_id, messages))

    def Send(self, request: pb.SendRequest, context: grpc.ServicerContext) -> pb.SendResponse:
        return self._send(request.topic, request.queue_id, [_message(request.message)])

    def SendBatch(self, request: pb.SendBatchRequest, context: grpc.ServicerContext) -> pb.SendResponse:
        return self._send(request.topic, request.queue_id, [_message(m) for m in request.messages])

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> pb.PullResponse:
        topic, queue_id = request.topic, request.queue_id
        if request.max_wait_ms:  # a cancelled call releases its held pull at once
            context.add_callback(lambda: self.core.wake_pulls(topic, queue_id))
        args = PullArgs(
            request.group,
            topic,
            queue_id,
            request.queue_offset,
            request.max_messages,
            request.max_bytes,
            request.max_wait_ms,
            request.subscription,
        )
        reply = self.core.pull(args, context.is_active)
        r, advice = reply.result, reply.advice
        status = pb.RETRY_ELSEWHERE if advice.retry_elsewhere else _PULL_STATUS[r.status]
        self.core.count_pull(topic, pb.PullStatus.Name(status), r.count, len(r.data), advice.reason)
        return pb.PullResponse(
            status=status,
            records=r.data,
            count=r.count,
            next_queue_offset=r.next_queue_offset,
            min_offset=r.min_offset,
            max_offset=r.max_offset,
            served_by=self.core.broker_id,
            suggested_broker_id=advice.suggested_broker_id,
            suggestion_reason=advice.reason.value,
            held=reply.held,
        )

    def CommitOffset(
        self, request: pb.CommitOffsetRequest, context: grpc.ServicerContext
    ) -> pb.CommitOffsetResponse:
        self.core.leader().commit_offset(request.group, request.topic, request.queue_id, request.offset)
        return pb.CommitOffsetResponse(served_by=self.core.broker_id)

    def QueryOffset(
        self, request: pb.QueryOffsetRequest, context: grpc.ServicerContext
    ) -> pb.QueryOffsetResponse:
        off = self.core.query_offset(request.group, request.topic, request.queue_id)
        return pb.QueryOffsetResponse(found=off is not None, offset=off or 0, served_by=self.core.broker_id)

    def GetQueueOffsets(
        self, request: pb.GetQueueOffsetsRequest, context: grpc.ServicerContext
    ) -> pb.GetQueueOffsetsResponse:
        return pb.GetQueueOffsetsResponse(
            queues=[
                pb.QueueOffsets(queue_id=q, min_offset=lo, max_offset=hi)
                for q, lo, hi in self.core.queue_offsets(request.topic)
            ],
            served_by=self.core.broker_id,
        )

    def SendBack(self, request: pb.SendBackRequest, context: grpc.ServicerContext) -> pb.SendBackResponse:
        dest, attempts, due = self.core.leader().send_back(
            request.group, request.topic, _message(request.message), request.max_reconsume
        )
        return pb.SendBackResponse(destination=dest, attempts=attempts, deliver_at_ms=due)

    def LockQueues(
        self, request: pb.LockQueuesRequest, context: grpc.ServicerContext
    ) -> pb.LockQueuesResponse:
        got = self.core.leader().lock_queues(
            request.group, request.topic, request.client_id, list(request.queue_ids), request.lease_ms
        )
        return pb.LockQueuesResponse(locked=got)

    def UnlockQueues(
        self, request: pb.LockQueuesRequest, context: grpc.ServicerContext
    ) -> pb.LockQueuesResponse:
        self.core.leader().unlock_queues(
            request.group, request.topic, request.client_id, list(request.queue_ids)
        )
        return pb.LockQueuesResponse()

    def CreateTopic(
        self, request: pb.CreateTopicRequest, context: grpc.ServicerContext
    ) -> pb.CreateTopicResponse:
        created, queues = self.core.leader().create_topic(request.topic, request.queues)
        return pb.CreateTopicResponse(created=created, queues=queues)

    def ListTopics(
        self, request: pb.ListTopicsRequest, context: grpc.ServicerContext
    ) -> pb.ListTopicsResponse:
        return pb.ListTopicsResponse(
            topics=[pb.TopicInfo(name=n, queues=q) for n, q in self.core.list_topics()]
        )

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        s: dict[str, Any] = self.core.status()
        return pb.StatusResponse(
            broker_name=s["broker_name"],
            broker_id=s["broker_id"],
            role=s["role"],
            address=s["address"],
            min_offset=s["min_offset"],
            max_offset=s["max_offset"],
            flushed_offset=s["flushed_offset"],
            uptime_ms=s["uptime_ms"],
            details_json=json.dumps(s["details"]),
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        members = self.core.heartbeat(request.group, request.topic, request.client_id, request.heartbeat_ms)
        return pb.HeartbeatResponse(members=members, served_by=self.core.broker_id)

    def Unregister(
        self, request: pb.UnregisterRequest, context: grpc.ServicerContext
    ) -> pb.UnregisterResponse:
        members = self.core.unregister(request.group, request.topic, request.client_id)
        return pb.UnregisterResponse(members=members)

    # ---- pop consumption (issue 18) -------------------------------------------------------

    def Pop(self, request: pb.PopRequest, context: grpc.ServicerContext) -> pb.PopResponse:
        topic, queue_id = request.topic, request.queue_id
        if request.max_wait_ms and queue_id >= 0:  # a cancelled call releases its held pop at once
            context.add_callback(lambda: self.core.wake_pulls(topic, queue_id))
        out = self.core.leader().popper.pop(
            request.group,
            topic,
            queue_id,
            request.max_messages,
            request.invisible_ms,
            request.max_wait_ms,
            context.is_active,
            request.tag_expression,
            request.bodies_elsewhere,
        )
        return pb.PopResponse(
            messages=[
                *(
                    pb.PoppedRecord(
                        record=m.data,
                        attempt=m.attempt,
                        receipt_handle=m.handle,
                        deadline_ms=m.deadline_ms,
                        queue_id=m.record.queue_id,
                        queue_offset=m.record.queue_offset,
                        size=len(m.data),
                    )
                    for m in out.messages
                ),
                *(
                    pb.PoppedRecord(
                        attempt=e.attempt,
                        receipt_handle=e.handle,
                        deadline_ms=e.deadline_ms,
                        queue_id=e.queue_id,
                        queue_offset=e.queue_offset,
                        size=e.size,
                        read_from=e.read_from,
                        physical_offset=e.physical_offset,
                    )
                    for e in out.elsewhere
                ),
            ],
            served_by=self.core.broker_id,
            suggested_broker_id=out.advice.suggested_broker_id,
            suggestion_reason=out.advice.reason.value,
            held=out.held,
        )

    def AckPop(self, request: pb.AckPopRequest, context: grpc.ServicerContext) -> pb.AckPopResponse:
        handles = list(request.receipt_handles)
        errors = self.core.leader().popper.ack_all(request.group, request.topic, handles)
        results = [
            pb.AckPopResult(receipt_handle=h)
            if e is None
            else pb.AckPopResult(receipt_handle=h, error_code=e.code, detail=e.message)
            for h, e in zip(handles, errors, strict=True)
        ]
        return pb.AckPopResponse(results=results, served_by=self.core.broker_id)

    def ChangeInvisible(
        self, request: pb.ChangeInvisibleRequest, context: grpc.ServicerContext
    ) -> pb.ChangeInvisibleResponse:
        handle, deadline = self.core.leader().popper.change_invisible(
            request.group, request.topic, request.receipt_handle, request.invisible_ms, request.keep_handle
        )
        return pb.ChangeInvisibleResponse(
            receipt_handle=handle, deadline_ms=deadline, served_by=self.core.broker_id
        )

    def PopDeadLetter(
        self, request: pb.PopDeadLetterRequest, context: grpc.ServicerContext
    ) -> pb.PopDeadLetterResponse:
        self.core.leader().popper.dead_letter(request.group, request.topic, request.receipt_handle)
        return pb.PopDeadLetterResponse(served_by=self.core.broker_id)

    # ---- transactions (issue 18) ------------------------------------------------------------

    def EndTransaction(
        self, request: pb.EndTransactionRequest, context: grpc.ServicerContext
    ) -> pb.EndTransactionResponse:
        if request.resolution not in _RESOLUTIONS:
            raise InvalidArgumentError("resolution must be COMMIT or ROLLBACK")
        ended = self.core.leader().transactions.end(
            request.topic, request.transaction_id, _RESOLUTIONS[request.resolution]
        )
        if request.from_check and not ended.repeated:
            log.info(
                "a check's answer ended a transaction of %s: %s", request.topic[:128], ended.outcome.value
            )
        return pb.EndTransactionResponse(
            outcome=ended.outcome.value, repeated=ended.repeated, served_by=self.core.broker_id
        )

    def PollOrphanTransactions(
        self, request: pb.PollOrphanTransactionsRequest, context: grpc.ServicerContext
    ) -> pb.PollOrphanTransactionsResponse:
        wanted = Wanted(frozenset(request.topics), frozenset(request.producer_groups), request.max_bytes)
        orphans = self.core.leader().transactions.poll(
            request.max_count or 32,
            request.max_wait_ms,
            context.is_active,
            wanted,
            request.delivered,
            request.returned,
        )
        name = self.core.broker_name
        return pb.PollOrphanTransactionsResponse(
            orphans=[
                pb.OrphanTransaction(
                    transaction_id=o.transaction_id,
                    topic=o.message.topic,
                    queue_id=o.message.queue_id,
                    message=pb.Message(
                        body=o.message.body,
                        tags=o.message.tags,
                        keys=o.message.keys,
                        properties=dict(o.message.properties or {}),
                        born_ms=o.message.born_ms,
                        flags=o.message.flags,
                    ),
                    producer_group=o.producer_group,
                    checks=o.checks,
                    message_id=f"{name}@{o.physical_offset:016X}",
                    store_ms=o.store_ms,
                )
                for o in orphans
            ],
            served_by=self.core.broker_id,
        )
