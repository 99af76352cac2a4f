"""One process's security, wired: certificate, policy, guard, ports, channels.

A broker or nameserver builds a `ProcessSecurity` from its `[tls]`,
`[auth]` and `[server]` config and uses it for three things: the guard it
puts in front of its handlers, the ports it listens on (`listen`: one
plaintext port without TLS; with TLS a client port and a member port), and
the channels it opens to other members (`channel_to`: mutual TLS to their
member ports, demanding the peer's kind and group).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from core.errors import ConfigError
from core.security.acl import AclFile
from core.security.config import AuthSection, require_protected
from core.security.guard import AuthGuard, SecurityPolicy
from core.security.identity import Kind, Member
from core.security.tls import ServerTls, TlsSection, load_tls


class ProcessSecurity:
    def __init__(
        self,
        me: Member,
        tls: TlsSection,
        auth: AuthSection,
        *,
        insecure: bool,
        drills: bool,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        """`wall_ms`: the wall clock (signatures carry wall-clock dates, so a
        monotonic clock would not do)."""
        self.me = me
        self.tls_section = tls
        self.auth = auth
        self.insecure = insecure
        self.tls: ServerTls | None = load_tls(tls, me) if tls.enabled else None
        acl = AclFile(Path(auth.acl_file), wall_ms()) if auth.acl_file else None
        self.policy = SecurityPolicy(
            me, self.tls is not None, acl, auth.allow_anonymous, drills, auth.max_skew_ms
        )
        self.guard = AuthGuard(self.policy, wall_ms)
        self._wall_ms = wall_ms

    def may_create_topic(self, topic: str) -> bool:
        """May the caller of the call being handled create `topic` (auto-create)?"""
        return self.policy.may_create_topic(topic, self._wall_ms())

    def check_exposure(self, hosts: list[tuple[str, str]]) -> None:
        """Refuse to serve unprotected on a non-loopback host (unless --insecure)."""
        require_protected(hosts, self.tls_section, self.auth, self.insecure)

    @property
    def metrics_tls(self) -> tuple[str, str] | None:
        """(certificate, key) for the metrics endpoint's HTTPS, with TLS."""
        t = self.tls_section
        return (t.cert_file, t.key_file) if t.enabled else None

    def listen(self, server: grpc.Server, listen: str, member_listen: str, key: str) -> tuple[int, int]:
        """Add this process's ports to `server`: (client port, member port).
        Without TLS the two are one plaintext port."""
        try:
            if self.tls is None:
                port = server.add_insecure_port(listen)
                member_port = port
            else:
                port = server.add_secure_port(listen, self.tls.client_port())
                member_port = server.add_secure_port(member_listen, self.tls.member_port()) if port else 0
        except RuntimeError as exc:
            raise ConfigError(key, f"cannot listen on {listen} / {member_listen}: {exc}") from exc
        if port == 0 or member_port == 0:
            raise ConfigError(key, f"cannot listen on {listen} / {member_listen}")
        return port, member_port

    def channel_to(
        self,
        target: str,
        peer: Kind,
        group: str = "",
        options: Sequence[tuple[str, Any]] = (),
        node: int | None = None,
    ) -> grpc.Channel:
        """A channel to another member's member port (plaintext without TLS)."""
        if self.tls is None:
            return grpc.insecure_channel(target, options=list(options))
        return self.tls.member_channel(target, peer, group, options, node)


def plaintext_channel(
    target: str,
    peer: Kind,
    group: str = "",
    options: Sequence[tuple[str, Any]] = (),
    node: int | None = None,
) -> grpc.Channel:
    """The channel factory of a process without TLS (and of tests)."""
    return grpc.insecure_channel(target, options=list(options))


ChannelFactory = Callable[..., grpc.Channel]
