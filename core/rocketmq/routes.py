"""A native route as the v2 `QueryRoute` answer, and the queue a FIFO
message goes to.

Every queue is listed with the **proxy's endpoint** as its broker's
address (clients talk to the proxy, never to brokers): the endpoints the
client queried with when well formed (as RocketMQ's proxy), else the
proxy's `advertise`; broker id 0 (the official producers and simple
consumers use only id-0 queues). The order is stable: groups by name,
then queue id. Groups without a live master stay in the list, so a
failover moves no message group to another queue (the send waits for the
new master instead) -- while the group stays registered: a group whose
brokers all expired leaves the nameserver's route, n changes and groups
move (nameserver/registry.py).

The proxy is not told which queue a FIFO client picked (Java's
`system_properties.queue_id` is ignored on purpose: the proxy chooses), so
it chooses itself: `sha256(message group) % n` over the writable queues
in this order (`fifo_queue`), the official Python client's own choice.
The Java and Go clients hash with SipHash-2-4 and pick another queue; the
order of a group is kept all the same, because the proxy alone decides
where a group's messages go.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.rocketmq.codes import Refused
from core.route import GroupRoute, MessageQueue, TopicRoute

ACCEPTED_TYPES = (d.NORMAL, d.FIFO, d.DELAY, d.TRANSACTION)  # what SendMessage stores
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9\-]{0,62})?(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,62})?)*\.?")


def endpoints(address: str) -> d.Endpoints:
    """`host:port` as v2 endpoints: IPv4 and IPv6 literals as such, else a
    domain name (which official clients accept only alone)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        scheme = d.IPv4 if ip.version == 4 else d.IPv6
    except ValueError:
        scheme = d.DOMAIN_NAME
    return d.Endpoints(scheme=scheme, addresses=[d.Address(host=host, port=int(port))])


MAX_ASKED_ADDRESSES = 16


def asked_endpoints(asked: d.Endpoints) -> d.Endpoints | None:
    """The endpoints a client queried with, if they are well formed (as
    RocketMQ's proxy does, routes name the address the client dialled: a
    proxy behind a load balancer or NAT is reached as the client reaches
    it); None: answer with the proxy's own (`advertise`). Well formed: 1..16
    addresses of the scheme's kind (a domain name alone), ports 1..65535."""
    addrs = list(asked.addresses)
    if not 1 <= len(addrs) <= MAX_ASKED_ADDRESSES:
        return None
    if asked.scheme == d.DOMAIN_NAME and len(addrs) != 1:
        return None
    for a in addrs:
        if not 1 <= a.port <= 65535 or not a.host or len(a.host) > 253:
            return None
        version: int
        try:
            version = ipaddress.ip_address(a.host).version
        except ValueError:
            version = 0
        if {d.IPv4: 4, d.IPv6: 6}.get(asked.scheme, 0) != version:
            return None
        if version == 0 and not _DOMAIN.fullmatch(a.host):
            return None
    out = d.Endpoints()
    out.CopyFrom(asked)
    return out


def _permission(g: GroupRoute, queue_id: int) -> int:
    read = "r" in g.perm and queue_id < g.read_queues
    write = "w" in g.perm and queue_id < g.write_queues
    return d.READ_WRITE if read and write else d.READ if read else d.WRITE if write else d.NONE


def listed(route: TopicRoute) -> list[tuple[MessageQueue, int]]:
    """(queue, v2 permission) of every queue the route lists, in the stable order."""
    out = []
    for g in sorted(route.groups, key=lambda g: g.broker_name):
        for q in range(max(g.read_queues, g.write_queues)):
            perm = _permission(g, q)
            if perm != d.NONE:
                out.append((MessageQueue(g.broker_name, q), perm))
    return out


def message_queues(route: TopicRoute, proxy: d.Endpoints) -> list[d.MessageQueue]:
    """The v2 answer's `message_queues` for `route`, all at `proxy`."""
    topic = d.Resource(name=route.topic)
    return [
        d.MessageQueue(
            topic=topic,
            id=mq.queue_id,
            permission=perm,  # type: ignore[arg-type]
            broker=d.Broker(name=mq.broker_name, id=0, endpoints=proxy),
            accept_message_types=ACCEPTED_TYPES,
        )
        for mq, perm in listed(route)
    ]


def writable(route: TopicRoute) -> list[MessageQueue]:
    """The queues a v2 producer picks from, in its order."""
    return [mq for mq, perm in listed(route) if perm in (d.WRITE, d.READ_WRITE)]


def fifo_queue(group: str, queues: Sequence[MessageQueue]) -> MessageQueue:
    """The official clients' choice for a message group (`queue_selector.py`:
    big-endian SHA-256 of the group, modulo the number of queues)."""
    if not queues:
        raise Refused(d.TOPIC_NOT_FOUND, "the topic has no writable queue")
    h = int.from_bytes(hashlib.sha256(group.encode()).digest(), "big")
    return queues[h % len(queues)]
