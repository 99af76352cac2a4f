"""A native route as the v2 `QueryRoute` answer, and the queue a FIFO
message goes to.

Every queue is listed with the **proxy's own endpoint** as its broker's
address (clients talk to the proxy, never to brokers) and broker id 0 (the
official producers and simple consumers use only id-0 queues). The order is
stable: groups by name, then queue id. Groups without a live master stay in
the list, so a failover moves no message group to another queue (the send
waits for the new master instead): FIFO clients pick a queue by
`sha256(message group) % n` over the writable queues in this order, and the
proxy, which is not told the client's pick, makes the same choice
(`fifo_queue`) over the same list.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.rocketmq.codes import Refused
from core.route import GroupRoute, MessageQueue, TopicRoute

ACCEPTED_TYPES = (d.NORMAL, d.FIFO)  # what SendMessage stores today


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
