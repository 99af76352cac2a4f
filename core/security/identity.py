"""Principals: who a call comes from.

A cluster **member** (broker, nameserver) proves itself with a certificate
from the cluster's CA whose URI SAN names it:

    tailrace://<cluster>/broker/<group>/<id>
    tailrace://<cluster>/nameserver/<name>

and carries a DNS SAN a peer can demand with a target-name override, so a
slave talks only to a member of its own group and a broker only to its
cluster's nameservers (`member_dns`). An **account** proves itself with a
signature made with its secret key (core/security/signing.py). A call with
neither comes from **nobody** (anonymous).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import InvalidArgumentError

SCHEME = "tailrace://"
DNS_SUFFIX = "tailrace.member"
_PART = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class Kind(StrEnum):
    BROKER = "broker"
    NAMESERVER = "nameserver"


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member, as its certificate names it. `name` is a broker's
    group or a nameserver's name; `node` a broker's id (0 for a nameserver)."""

    cluster: str
    kind: Kind
    name: str
    node: int = 0

    @property
    def uri(self) -> str:
        if self.kind is Kind.BROKER:
            return f"{SCHEME}{self.cluster}/broker/{self.name}/{self.node}"
        return f"{SCHEME}{self.cluster}/nameserver/{self.name}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class Account:
    access_key: str

    def __str__(self) -> str:
        return f"account {self.access_key!r}"


@dataclass(frozen=True, slots=True)
class Anonymous:
    def __str__(self) -> str:
        return "an anonymous caller"


Principal = Member | Account | Anonymous
ANONYMOUS = Anonymous()


def parse_member_uri(uri: str) -> Member:
    """The member a certificate URI names; `InvalidArgumentError` if it names none."""
    if not uri.startswith(SCHEME):
        raise InvalidArgumentError(f"not a member URI: {uri[:80]!r}")
    parts = uri[len(SCHEME) :].split("/")
    if len(parts) == 4 and parts[1] == Kind.BROKER:
        cluster, _, group, node = parts
        if all(_PART.fullmatch(p) for p in (cluster, group)) and node.isdigit() and len(node) <= 9:
            return Member(cluster, Kind.BROKER, group, int(node))
    if len(parts) == 3 and parts[1] == Kind.NAMESERVER:
        cluster, _, name = parts
        if all(_PART.fullmatch(p) for p in (cluster, name)):
            return Member(cluster, Kind.NAMESERVER, name)
    raise InvalidArgumentError(f"not a member URI: {uri[:80]!r}")


def member_dns(cluster: str, kind: Kind, group: str = "", node: int | None = None) -> str:
    """The DNS SAN every member certificate of a broker group (or every
    nameserver of a cluster) carries, and with `node` the one only that
    broker's carries: what a peer demands as the target name (a slave demands
    the very node it was told is its master)."""
    if kind is Kind.BROKER:
        prefix = f"n{node}." if node is not None else ""
        return f"{prefix}{group}.broker.{cluster}.{DNS_SUFFIX}"
    return f"nameserver.{cluster}.{DNS_SUFFIX}"


def etcd_dns(cluster: str) -> str:
    """The DNS SAN of a cluster's etcd certificate, which nameservers demand
    (no member certificate carries it)."""
    return f"etcd.{cluster}.{DNS_SUFFIX}"


def member_of(auth_context: Mapping[str, Any]) -> Member | None:
    """The member a call's TLS peer certificate names (None: no verified
    certificate, e.g. the client port, or no member URI in it). gRPC puts a
    verified peer's URI SANs under `peer_uri`."""
    for raw in auth_context.get("peer_uri", ()):
        uri = raw.decode() if isinstance(raw, bytes) else str(raw)
        if uri.startswith(SCHEME):
            try:
                return parse_member_uri(uri)
            except InvalidArgumentError:
                return None
    return None
