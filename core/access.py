"""Who may call each RPC and which role serves it: one table for every service.

Every method of every service a Tailrace process serves is listed here
(`tests/component/test_access.py` walks the service descriptors and fails on
a method with no entry). Two columns:

- **serves**: `ANY_ROLE` (a read, or state that is per broker and not in
  the log) or `LEADER` (a write: a follower answers `NOT_MASTER` naming the
  master, and changes nothing). `LeaderGuard` enforces it in front of every
  handler, so a new leader-only RPC cannot forget its check.
- **callers**: `CLIENTS` (producers, consumers, admin tools), `MEMBERS` (brokers
  and controllers of the cluster) or `OPERATORS` (drills). Recorded for the
  authentication of issue 15, which enforces it; today every caller is
  trusted alike.

Decisions (docs/design.md, "Roles"): consumer-group membership (`Heartbeat`,
`Unregister`) is per broker and in memory, so a follower keeps the view of
the consumers that read from it, as RocketMQ's slaves do; `QueryOffset`
answers from the replicated offsets, which never run ahead of the master's.
Queue locks live on the leader only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc


class Serves(Enum):
    ANY_ROLE = "any role"
    LEADER = "leader only"


class Callers(Enum):
    CLIENTS = "clients"
    MEMBERS = "cluster members"
    OPERATORS = "operators"


@dataclass(frozen=True, slots=True)
class Access:
    serves: Serves
    callers: Callers


READ = Access(Serves.ANY_ROLE, Callers.CLIENTS)
WRITE = Access(Serves.LEADER, Callers.CLIENTS)
MEMBER = Access(Serves.ANY_ROLE, Callers.MEMBERS)

RPC_ACCESS: dict[str, Access] = {
    # tailrace.v1.Broker
    "/tailrace.v1.Broker/Send": WRITE,
    "/tailrace.v1.Broker/SendBatch": WRITE,
    "/tailrace.v1.Broker/CreateTopic": WRITE,
    "/tailrace.v1.Broker/CommitOffset": WRITE,
    "/tailrace.v1.Broker/SendBack": WRITE,
    "/tailrace.v1.Broker/LockQueues": WRITE,
    "/tailrace.v1.Broker/UnlockQueues": WRITE,
    "/tailrace.v1.Broker/Pop": WRITE,  # pop state is the master's (issue 18)
    "/tailrace.v1.Broker/AckPop": WRITE,
    "/tailrace.v1.Broker/ChangeInvisible": WRITE,
    "/tailrace.v1.Broker/PopDeadLetter": WRITE,
    "/tailrace.v1.Broker/EndTransaction": WRITE,  # transaction state is the master's
    "/tailrace.v1.Broker/PollOrphanTransactions": WRITE,
    "/tailrace.v1.Broker/Pull": READ,
    "/tailrace.v1.Broker/QueryOffset": READ,
    "/tailrace.v1.Broker/GetQueueOffsets": READ,
    "/tailrace.v1.Broker/ListTopics": READ,
    "/tailrace.v1.Broker/Status": READ,
    "/tailrace.v1.Broker/Heartbeat": READ,  # per-broker, in-memory membership
    "/tailrace.v1.Broker/Unregister": READ,
    # tailrace.v1.BrokerAdmin (issue 19): the operator's commands, admin accounts only
    "/tailrace.v1.BrokerAdmin/DescribeGroups": READ,
    "/tailrace.v1.BrokerAdmin/ResetOffset": WRITE,  # commits through the master's log
    "/tailrace.v1.BrokerAdmin/GetMessage": READ,
    "/tailrace.v1.BrokerAdmin/FindMessages": READ,
    "/tailrace.v1.BrokerAdmin/DeleteTopic": WRITE,  # through the master's log
    # tailrace.v1.Replication: a slave of the group streams the leader's log
    "/tailrace.v1.Replication/Replicate": Access(Serves.LEADER, Callers.MEMBERS),
    # tailrace.v1.NameServer (no roles: every nameserver serves every call)
    "/tailrace.v1.NameServer/RegisterBroker": MEMBER,
    "/tailrace.v1.NameServer/UnregisterBroker": MEMBER,
    "/tailrace.v1.NameServer/ControllerHeartbeat": MEMBER,
    "/tailrace.v1.NameServer/GetRoute": READ,
    "/tailrace.v1.NameServer/ListClusters": READ,
    "/tailrace.v1.NameServer/ControllerStatus": READ,
    "/tailrace.v1.NameServer/Isolate": Access(Serves.ANY_ROLE, Callers.OPERATORS),
    # grpc.health.v1.Health
    "/grpc.health.v1.Health/Check": READ,
    "/grpc.health.v1.Health/Watch": READ,
    "/grpc.health.v1.Health/List": READ,
}


def access_of(method: str) -> Access | None:
    return RPC_ACCESS.get(method)


Refusal = Callable[[str], Any]  # the answer of a follower to a leader-only method (or it raises)


class LeaderGuard(grpc.ServerInterceptor):
    """Refuses leader-only methods while `is_leader()` is false, before the
    handler runs: `refuse(method)` returns the answer (a send's NOT_MASTER
    status) or raises (NotMasterError). A method missing from the table is
    refused too (fail closed), so it cannot ship unclassified."""

    def __init__(self, is_leader: Callable[[], bool], refuse: Refusal) -> None:
        self.is_leader = is_leader
        self.refuse = refuse

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        access = access_of(method)
        if handler is None or (access is not None and access.serves is Serves.ANY_ROLE):
            return handler
        unclassified = access is None

        def refused() -> bool:
            if unclassified:
                raise RuntimeError(f"{method} has no entry in core/access.py: refused")
            return not self.is_leader()

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def guarded_unary(request: Any, context: grpc.ServicerContext) -> Any:
                return self.refuse(method) if refused() else unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                guarded_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            stream = handler.stream_stream

            def guarded_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                if refused():
                    self.refuse(method)  # raises: a stream has no refusal status to answer
                    raise RuntimeError(f"{method}: a refusal of a stream must raise")
                yield from stream(requests, context)

            return grpc.stream_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise RuntimeError(f"{method}: unary-stream and stream-unary methods are not guarded yet")
