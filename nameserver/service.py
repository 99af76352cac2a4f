"""gRPC adapter for the nameserver registry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import grpc

from core.clock import now_ms
from core.errors import (
    InvalidArgumentError,
    NotControllerError,
    PermissionDeniedError,
    UnknownTopicError,
    brief,
)
from core.metrics import NameserverMetrics
from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.roles import parse_role
from core.route import GroupRoute
from core.security.guard import caller
from core.security.identity import Member
from nameserver.controller import Controller, Heartbeat
from nameserver.registry import BrokerRegistry, Registration, TopicInfo


def group_to_pb(g: GroupRoute) -> pb.GroupRoute:
    return pb.GroupRoute(
        broker_name=g.broker_name,
        cluster=g.cluster,
        read_queues=g.read_queues,
        write_queues=g.write_queues,
        perm=g.perm,
        brokers=[
            pb.BrokerRoute(
                broker_id=b.broker_id,
                address=b.address,
                role=b.role,
                epoch=b.epoch,
                alive=b.alive,
                max_offset=b.max_offset,
            )
            for b in g.brokers
        ],
        auto_create_topics=g.auto_create,
    )


MAX_HEARTBEAT_MS = 60_000
MAX_TOPICS = 100_000  # per registration (brokers hold at most quotas.max_topics)
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # as broker.broker_name and broker.cluster
_ADDRESS = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,253}:[0-9]{1,5}")


def registration_node(b: pb.BrokerRegistration) -> int:
    """The node a registration speaks for (its stable id; without a
    controller, its broker id): what the caller's certificate must name."""
    return b.node_id or b.broker_id


class NameServerService(nameserver_pb2_grpc.NameServerServicer):
    def __init__(
        self,
        registry: BrokerRegistry,
        clock_ms: Callable[[], int] = now_ms,
        controller: Controller | None = None,
    ) -> None:
        self.registry = registry
        self.controller = controller
        self.clock_ms = clock_ms
        self.metrics = NameserverMetrics(
            lambda: registry.live_count(clock_ms()), lambda: registry.group_counts(clock_ms())
        )

    def RegisterBroker(
        self, request: pb.RegisterBrokerRequest, context: grpc.ServicerContext
    ) -> pb.RegisterBrokerResponse:
        b = request.broker
        if not b.broker_name or not b.address or b.heartbeat_ms == 0:
            raise InvalidArgumentError("registration needs broker_name, address and heartbeat_ms")
        if b.heartbeat_ms > MAX_HEARTBEAT_MS:  # a registration may not outlive its broker for days
            raise InvalidArgumentError(f"heartbeat_ms must be at most {MAX_HEARTBEAT_MS}")
        if not _NAME.fullmatch(b.broker_name) or not _NAME.fullmatch(b.cluster or "x"):
            raise InvalidArgumentError(
                f"broker name {brief(b.broker_name)} must match [A-Za-z0-9_.-]{{1,64}}"
            )
        if not _ADDRESS.fullmatch(b.address) or len(b.topics) > MAX_TOPICS:
            raise InvalidArgumentError(
                f"address {brief(b.address)} must be HOST:PORT; at most {MAX_TOPICS} topics"
            )
        self._check_master_claim(b)
        reg = Registration(
            cluster=b.cluster,
            broker_name=b.broker_name,
            broker_id=b.broker_id,
            address=b.address,
            epoch=b.epoch,
            role=b.role,
            max_offset=b.max_offset,
            heartbeat_ms=b.heartbeat_ms,
            topics={t.name: TopicInfo(t.read_queues, t.write_queues, t.perm) for t in b.topics},
            node_id=registration_node(b),
            auto_create=b.auto_create_topics,
        )
        epoch = self.registry.register(reg, self.clock_ms())
        return pb.RegisterBrokerResponse(group_epoch=epoch)

    def _check_master_claim(self, b: pb.BrokerRegistration) -> None:
        """A failover master (routed as id 0, node >= 1) is who the controller
        elected, in no newer epoch than it did: checked where this nameserver
        runs the controller, so a compromised slave of the group cannot claim
        the group's routes with a made-up epoch."""
        node = registration_node(b)
        if self.controller is None or b.broker_id != 0 or node == 0:
            return
        elected = self.controller.elected(b.broker_name, node, b.epoch, self.clock_ms())
        if elected is None or elected[1] != node or b.epoch > elected[0]:
            raise PermissionDeniedError(
                f"{brief(b.broker_name)}/{node} claims mastership in epoch {b.epoch}; the controller elected "
                f"{'nobody' if elected is None else f'node {elected[1]} in epoch {elected[0]}'}"
            )

    def UnregisterBroker(
        self, request: pb.UnregisterBrokerRequest, context: grpc.ServicerContext
    ) -> pb.UnregisterBrokerResponse:
        who = caller()  # a broker may unregister only itself (core/security/guard.py)
        owner = (who.name, who.node) if isinstance(who, Member) else None
        self.registry.unregister(request.address, owner)
        return pb.UnregisterBrokerResponse()

    def GetRoute(self, request: pb.GetRouteRequest, context: grpc.ServicerContext) -> pb.GetRouteResponse:
        route = self.registry.route(request.topic, self.clock_ms())
        self.metrics.route_lookups.labels("found" if route is not None else "unknown_topic").inc()
        if route is None:
            raise UnknownTopicError(f"no live broker serves topic {brief(request.topic)}")
        return pb.GetRouteResponse(topic=route.topic, groups=[group_to_pb(g) for g in route.groups])

    def ListClusters(
        self, request: pb.ListClustersRequest, context: grpc.ServicerContext
    ) -> pb.ListClustersResponse:
        return pb.ListClustersResponse(
            clusters=[
                pb.ClusterInfo(name=name, groups=[group_to_pb(g) for g in groups])
                for name, groups in self.registry.clusters(self.clock_ms()).items()
            ]
        )

    # ---- failover controller ------------------------------------------------------------

    def _controller(self) -> Controller:
        if self.controller is None:
            raise NotControllerError("this nameserver does not run the failover controller")
        return self.controller

    def ControllerHeartbeat(
        self, request: pb.ControllerHeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.ControllerHeartbeatResponse:
        hb = Heartbeat(
            group=request.group,
            cluster=request.cluster,
            node_id=request.node_id,
            address=request.address,
            epoch=request.epoch,
            role=parse_role(request.role),
            max_offset=request.max_offset,
            in_sync=frozenset(request.in_sync),
            priority=request.priority,
            member_address=request.member_address,
        )
        d = self._controller().heartbeat(hb, self.clock_ms())
        return pb.ControllerHeartbeatResponse(
            epoch=d.epoch,
            master_id=d.master_id,
            master_address=d.master_address,
            in_sync=sorted(d.in_sync),
            lease_ms=d.lease_ms,
            master_member_address=d.master_member_address,
        )

    def ControllerStatus(
        self, request: pb.ControllerStatusRequest, context: grpc.ServicerContext
    ) -> pb.ControllerStatusResponse:
        ctl, now = self._controller(), self.clock_ms()
        body = {"controller": ctl.role(now), "groups": ctl.status(now)}
        return pb.ControllerStatusResponse(json=json.dumps(body))

    def Isolate(self, request: pb.IsolateRequest, context: grpc.ServicerContext) -> pb.IsolateResponse:
        if not request.address:
            raise InvalidArgumentError("isolate needs an address")
        self._controller().isolate(request.address, request.duration_ms, self.clock_ms())
        return pb.IsolateResponse()
