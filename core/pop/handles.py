"""Receipt handles: opaque strings naming one hand-out of a popped message.

A handle names (broker group, group, topic, queue, offset, generation) and
carries an HMAC-SHA256 over them (16 bytes), keyed by the broker group's
key: derived from the cluster secret and the broker group's name, so the
master and its slaves (which may be promoted) check each other's handles,
and a handle of another broker group or an altered one is refused. Without
a cluster secret the key is derived from the names alone: handles are then
checked for integrity, not authenticity (anyone may compute them), and the
generation check still keeps a stale handle from acking a newer hand-out.

    v1.<base64url(broker|group|topic|queue|offset|gen)>.<base64url(mac)>
"""

from __future__ import annotations

from dataclasses import dataclass

from core import tokens
from core.errors import InvalidReceiptError

PREFIX = "v1"
MAC_BYTES = tokens.MAC_BYTES
MAX_HANDLE = 1024


@dataclass(frozen=True)
class Receipt:
    broker: str
    group: str
    topic: str
    queue: int
    offset: int
    gen: int


def handle_key(cluster_secret: str, broker_name: str) -> bytes:
    """The key of one broker group's handles."""
    return tokens.derive_key(b"tailrace-pop-handle", cluster_secret, broker_name)


def encode_handle(key: bytes, r: Receipt) -> str:
    body = "|".join((r.broker, r.group, r.topic, str(r.queue), str(r.offset), str(r.gen))).encode()
    return tokens.seal(key, PREFIX, body)


def decode_handle(key: bytes, handle: str) -> Receipt:
    """The receipt a handle names; InvalidReceiptError when it is malformed,
    altered, forged or made with another broker group's key."""
    if not isinstance(handle, str) or len(handle) > MAX_HANDLE:
        raise InvalidReceiptError("not a receipt handle")
    split = tokens.split(PREFIX, handle, MAX_HANDLE)
    if split is None:
        raise InvalidReceiptError("not a receipt handle of this cluster")
    body, mac = split
    if not tokens.verified(key, body, mac):
        raise InvalidReceiptError("the receipt handle was not issued by this broker group (or was altered)")
    try:
        broker, group, topic, queue, offset, gen = body.decode().split("|")
        return Receipt(broker, group, topic, int(queue), int(offset), int(gen))
    except ValueError:  # a valid MAC over a bad body: issued by a broken peer
        raise InvalidReceiptError("the receipt handle is malformed") from None


def broker_of(handle: str) -> str:
    """The broker group a handle names (in clear text before its MAC), to
    route it to that group's master, which checks the MAC; raises
    InvalidReceiptError when it is not shaped as a handle."""
    split = tokens.split(PREFIX, handle, MAX_HANDLE)
    try:
        broker = split[0].decode().split("|")[0] if split is not None else ""
    except UnicodeError:
        broker = ""
    if not broker:
        raise InvalidReceiptError("not a receipt handle of this cluster")
    return broker
