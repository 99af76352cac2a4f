"""gRPC adapter for `tailrace.v1.BrokerAdmin` (issue 19): unpack, call
core/admin, pack. Which role serves what and who may call is core/access.py
and core/security/guard.py (admin), checked before a handler runs."""

from __future__ import annotations

import grpc

from core.admin.groups import describe_groups
from core.admin.lookup import find_messages, get_message
from core.admin.reset import Target, reset_offsets
from core.admin.topics import delete_topic
from core.broker.core import BrokerCore
from core.clock import now_ms
from core.errors import InvalidArgumentError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc

_TARGETS = {
    pb.RESET_EARLIEST: Target.EARLIEST,
    pb.RESET_LATEST: Target.LATEST,
    pb.RESET_OFFSET: Target.OFFSET,
    pb.RESET_TIME: Target.TIME,
}


ANSWER_MARGIN_S = 0.5  # a scan stops this long before the caller's deadline, to answer in time


def caller_gone(context: grpc.ServicerContext) -> bool:
    """The call was cancelled, or its deadline is too near to go on scanning."""
    left = context.time_remaining()
    return not context.is_active() or (left is not None and left < ANSWER_MARGIN_S)


class BrokerAdminService(broker_pb2_grpc.BrokerAdminServicer):
    def __init__(self, core: BrokerCore) -> None:
        self.core = core

    def DescribeGroups(
        self, request: pb.DescribeGroupsRequest, context: grpc.ServicerContext
    ) -> pb.DescribeGroupsResponse:
        now = now_ms()
        rows = describe_groups(self.core, request.group, request.topic, now)
        return pb.DescribeGroupsResponse(
            queues=[pb.GroupQueue(**r) for r in rows],
            broker_name=self.core.broker_name,
            served_by=self.core.broker_id,
            role=str(self.core.role.name),
            now_ms=now,
        )

    def ResetOffset(
        self, request: pb.ResetOffsetRequest, context: grpc.ServicerContext
    ) -> pb.ResetOffsetResponse:
        target = _TARGETS.get(request.target)
        if target is None:
            raise InvalidArgumentError("a reset needs a target: earliest, latest, an offset or a time")
        out = reset_offsets(
            self.core,
            request.group,
            request.topic,
            target,
            request.offset,
            request.timestamp_ms,
            request.dry_run,
            request.force,
            now_ms(),
        )
        return pb.ResetOffsetResponse(
            queues=[pb.ResetQueue(**r) for r in out.plan],
            applied=out.applied,
            members=out.members,
            broker_name=self.core.broker_name,
            served_by=self.core.broker_id,
            last_pop_ms=out.last_pop_ms,
        )

    def DeleteTopic(
        self, request: pb.DeleteTopicRequest, context: grpc.ServicerContext
    ) -> pb.DeleteTopicResponse:
        what, deleted = delete_topic(self.core, request.topic, request.dry_run, request.force)
        return pb.DeleteTopicResponse(
            queues=[pb.QueueOffsets(**q) for q in what["queues"]],
            messages=what["messages"],
            offsets=[pb.DeletedOffset(**o) for o in what["offsets"]],
            groups=what["groups"],
            pop_inflight=what["pop_inflight"],
            deleted=deleted,
            broker_name=self.core.broker_name,
            served_by=self.core.broker_id,
        )

    def GetMessage(
        self, request: pb.GetMessageRequest, context: grpc.ServicerContext
    ) -> pb.GetMessageResponse:
        data = get_message(self.core.store, request.physical_offset, self.core.visible_end())
        return pb.GetMessageResponse(
            record=data, broker_name=self.core.broker_name, served_by=self.core.broker_id
        )

    def FindMessages(
        self, request: pb.FindMessagesRequest, context: grpc.ServicerContext
    ) -> pb.FindMessagesResponse:
        records, scanned, complete = find_messages(
            self.core.store,
            request.topic,
            request.key,
            request.max_scan,
            request.max_messages,
            self.core.visible_end(),
            stop=lambda: caller_gone(context),
        )
        return pb.FindMessagesResponse(
            records=records,
            scanned=scanned,
            complete=complete,
            broker_name=self.core.broker_name,
            served_by=self.core.broker_id,
        )
