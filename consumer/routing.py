"""Where a topic lives: routes from the nameservers, or a single broker.

`NameserverRoutes` asks the nameservers in turn (starting with the last one
that answered), caches each topic's route, and refreshes it when it is older
than `refresh_s` or when the caller says the cached one failed it
(`NOT_MASTER`, unknown topic, a dead connection). A nameserver that refuses
the caller (UNAUTHENTICATED, PERMISSION_DENIED) has answered: that error is
raised as it is, not tried on the next one nor turned into "no nameserver
answered" (which the producer would retry). It also says where a topic
with no route can be created by sending to it (`auto_create_route`), and
what each nameserver routes (`routes_by_nameserver`: an admin waiting for a
topic it created). `SingleBrokerRoutes` serves the same interface for a client
pointed at one broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from consumer.channels import open_channel
from consumer.connection import rpc_error
from consumer.profile import PLAINTEXT, ClientSecurity
from consumer.retry_plan import ACCESS_REFUSED
from core.errors import BrokerUnavailableError, TailraceError, UnknownTopicError
from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.pb.tailrace.v1 import broker_pb2_grpc, nameserver_pb2_grpc
from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, TopicRoute

log = logging.getLogger(__name__)
ROUTE_REFRESH_S = 30.0


class Routes(Protocol):
    def get(self, topic: str, refresh: bool = False, timeout_s: float | None = None) -> TopicRoute:
        """The topic's route; a lookup gives up within `timeout_s` (default:
        the routes' own timeout per nameserver)."""
        ...

    def peek(self, topic: str) -> TopicRoute | None:
        """The cached route while it is fresh, with no I/O (an event loop may call it)."""
        ...

    def auto_create_route(self, topic: str, timeout_s: float | None = None) -> TopicRoute:
        """Where `topic`, which has no route, is created by sending to it."""
        ...

    def close(self) -> None: ...


def live_master(routes: Routes, broker_name: str, topic: str, refresh: bool, timeout_s: float) -> str:
    """The address of `broker_name`'s master as `topic`'s route names it
    (`refresh`: the route asked again); BrokerUnavailableError when the
    route names none (a failover under way)."""
    route = routes.get(topic, refresh=refresh, timeout_s=timeout_s)
    address = route.master_address(broker_name)
    if address is None:
        raise BrokerUnavailableError(f"broker group {broker_name!r} has no live master for {topic!r}")
    return address


def group_from_pb(g: pb.GroupRoute) -> GroupRoute:
    return GroupRoute(
        g.broker_name,
        g.cluster,
        g.read_queues,
        g.write_queues,
        g.perm,
        tuple(
            BrokerEndpoint(b.broker_id, b.address, b.role, b.epoch, b.alive, b.max_offset) for b in g.brokers
        ),
        g.auto_create_topics,
    )


def route_from_pb(resp: pb.GetRouteResponse) -> TopicRoute:
    return TopicRoute(resp.topic, tuple(group_from_pb(g) for g in resp.groups))


class NameserverRoutes:
    def __init__(
        self,
        nameservers: list[str],
        refresh_s: float = ROUTE_REFRESH_S,
        timeout_s: float = 5.0,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one nameserver address is needed")
        self.nameservers = list(nameservers)
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.security = security
        self._channels = [open_channel(a, security) for a in self.nameservers]
        self._stubs = [nameserver_pb2_grpc.NameServerStub(c) for c in self._channels]
        self._next = 0
        self._cache: dict[str, tuple[float, TopicRoute]] = {}
        self._lock = threading.Lock()

    def get(self, topic: str, refresh: bool = False, timeout_s: float | None = None) -> TopicRoute:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(topic)
        if cached is not None and not refresh and now - cached[0] < self.refresh_s:
            return cached[1]
        try:
            route = self._fetch(topic, timeout_s)
        except BrokerUnavailableError:
            if cached is not None:  # every nameserver down: keep what we knew
                log.warning("no nameserver answered; using the cached route of %s", topic)
                return cached[1]
            raise
        with self._lock:
            self._cache[topic] = (time.monotonic(), route)
        return route

    def peek(self, topic: str) -> TopicRoute | None:
        with self._lock:
            cached = self._cache.get(topic)
        if cached is not None and time.monotonic() - cached[0] < self.refresh_s:
            return cached[1]
        return None

    def _deadline(self, timeout_s: float | None) -> Callable[[], float]:
        """Per call, the time left of a lookup that must end within `timeout_s`."""
        if timeout_s is None:
            return lambda: self.timeout_s
        end = time.monotonic() + timeout_s
        return lambda: max(0.001, min(self.timeout_s, end - time.monotonic()))

    def _fetch(self, topic: str, timeout_s: float | None = None) -> TopicRoute:
        left = self._deadline(timeout_s)
        last: TailraceError | None = None
        n = len(self._stubs)
        for i in range(n):
            idx = (self._next + i) % n
            try:
                resp = self._stubs[idx].GetRoute(pb.GetRouteRequest(topic=topic), timeout=left())
                self._next = idx
                return route_from_pb(resp)
            except grpc.RpcError as exc:
                err = rpc_error(exc, self.nameservers[idx], self.security)
                if isinstance(err, (UnknownTopicError, *ACCESS_REFUSED)):
                    raise err from None  # the nameserver answered: no route, or not for this caller
                last = err
        raise BrokerUnavailableError(f"no nameserver of {self.nameservers} answered: {last}")

    def routes_by_nameserver(self, topic: str) -> dict[str, TopicRoute | None]:
        """What every nameserver that answers routes for `topic` now (None: no
        route); one that does not answer is left out."""
        out: dict[str, TopicRoute | None] = {}
        calls = [
            (a, stub.GetRoute.future(pb.GetRouteRequest(topic=topic), timeout=self.timeout_s))
            for a, stub in zip(self.nameservers, self._stubs, strict=True)
        ]
        for address, call in calls:
            try:
                out[address] = route_from_pb(call.result())
            except grpc.RpcError as exc:
                err = rpc_error(exc, address, self.security)
                if isinstance(err, ACCESS_REFUSED):
                    raise err from None  # waiting would not change it
                if isinstance(err, UnknownTopicError):
                    out[address] = None
        return out

    def auto_create_route(self, topic: str, timeout_s: float | None = None) -> TopicRoute:
        """Where `topic`, which has no route, is created by sending to it: the
        groups (of every cluster) whose live master creates a topic it lacks
        on first send (`broker.auto_create_topics`), with no queues yet.

        Raises `UnknownTopicError` when masters are registered but none
        creates topics (create it first), `BrokerUnavailableError` when no
        master is registered or no nameserver answers (try again later)."""
        groups = [group_from_pb(g) for c in self.clusters(timeout_s).clusters for g in c.groups]
        live = [g for g in groups if g.master is not None]
        if not live:
            raise BrokerUnavailableError(f"no live master is registered with {self.nameservers}")
        creating = tuple(g for g in live if g.auto_create)
        if not creating:
            raise UnknownTopicError(
                f"topic {topic!r} does not exist; create it with `tailrace topic create` (no master "
                f"registered with {', '.join(self.nameservers)} creates topics on first send)"
            )
        return TopicRoute(topic, creating)

    def clusters(self, timeout_s: float | None = None) -> pb.ListClustersResponse:
        left = self._deadline(timeout_s)
        last: Exception | None = None
        for address, stub in zip(self.nameservers, self._stubs, strict=True):
            try:
                return stub.ListClusters(pb.ListClustersRequest(), timeout=left())  # type: ignore[no-any-return]
            except grpc.RpcError as exc:
                last = rpc_error(exc, address, self.security)
                if isinstance(last, ACCESS_REFUSED):
                    raise last from None
        raise BrokerUnavailableError(f"no nameserver answered: {last}")

    def close(self) -> None:
        for c in self._channels:
            c.close()


class SingleBrokerRoutes:
    """The route of a topic on one broker, for clients given `broker=ADDR`."""

    def __init__(self, address: str, timeout_s: float = 5.0, security: ClientSecurity = PLAINTEXT) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.security = security
        self._channel = open_channel(address, security)
        self._stub = broker_pb2_grpc.BrokerStub(self._channel)
        self._name: str | None = None
        self._cache: dict[str, TopicRoute] = {}

    def peek(self, topic: str) -> TopicRoute | None:
        return self._cache.get(topic)

    def auto_create_route(self, topic: str, timeout_s: float | None = None) -> TopicRoute:
        """One broker: it creates the topic on first send or not at all (its
        route, with no queues, says where to send)."""
        raise UnknownTopicError(f"topic {topic!r} does not exist on {self.address}")

    def get(self, topic: str, refresh: bool = False, timeout_s: float | None = None) -> TopicRoute:
        if topic in self._cache and not refresh:
            return self._cache[topic]
        t = self.timeout_s if timeout_s is None else max(0.001, min(self.timeout_s, timeout_s / 2))
        try:
            if self._name is None:
                self._name = self._stub.Status(bpb.StatusRequest(), timeout=t).broker_name
            offs = self._stub.GetQueueOffsets(bpb.GetQueueOffsetsRequest(topic=topic), timeout=t)
        except grpc.RpcError as exc:
            err = rpc_error(exc, self.address, self.security)
            if isinstance(err, UnknownTopicError):  # the broker may auto-create on send
                return self._route(topic, 0)
            raise err from None
        route = self._route(topic, len(offs.queues))
        self._cache[topic] = route
        return route

    def _route(self, topic: str, queues: int) -> TopicRoute:
        master = BrokerEndpoint(0, self.address, "master", 0, True)
        group = GroupRoute(self._name or "", "", queues, queues, "rw", (master,))
        return TopicRoute(topic, (group,))

    def close(self) -> None:
        self._channel.close()


def routes_for(
    broker: str | None, namesrv: Sequence[str] | str | None, security: ClientSecurity = PLAINTEXT
) -> Routes:
    """The routes of a client given `broker=ADDR` or `namesrv=[...]` (or "A,B")."""
    if (broker is None) == (namesrv is None):
        raise ValueError("give either broker= or namesrv=")
    if broker is not None:
        return SingleBrokerRoutes(broker, security=security)
    if isinstance(namesrv, str):
        namesrv = [a for a in namesrv.split(",") if a]
    return NameserverRoutes(list(namesrv or []), security=security)
