"""The `[auth]` config section (accounts) and the rule that keeps an
unprotected process on loopback."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from core.config import require
from core.errors import ConfigError
from core.security.signing import DEFAULT_SKEW_MS
from core.security.tls import TlsSection


@dataclass(frozen=True, slots=True)
class AuthSection:
    acl_file: str = field(
        default="",
        metadata={"doc": "accounts and permissions (TOML, owner-only), reloaded on change; empty: none"},
    )
    allow_anonymous: bool = field(
        default=False, metadata={"doc": "unsigned calls get the ACL's [anonymous] permissions"}
    )
    max_skew_ms: int = field(
        default=DEFAULT_SKEW_MS, metadata={"doc": "how far a signed request's time may be from this clock"}
    )
    mqv2_any_timezone: bool = field(
        default=True,
        metadata={
            "doc": "tailrace proxy: a v2 signature's date (the client's local time) may be in any "
            "UTC offset -12h..+14h; false: UTC only (clients need TZ=UTC)"
        },
    )

    def validate(self, prefix: str = "auth") -> None:
        require(1000 <= self.max_skew_ms <= 3_600_000, f"{prefix}.max_skew_ms", "must be in 1000..3600000")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_protected(
    hosts: list[tuple[str, str]], tls: TlsSection, auth: AuthSection, insecure: bool
) -> None:
    """A port others can reach needs TLS and accounts, unless `--insecure`
    says the operator knows (`hosts`: (config key, host) pairs)."""
    if insecure or (tls.enabled and auth.acl_file):
        return
    for key, host in hosts:
        if host and not is_loopback(host):
            missing = " and ".join(
                x for x, on in (("[tls]", tls.enabled), ("[auth] acl_file", bool(auth.acl_file))) if not on
            )
            raise ConfigError(
                key,
                f"{host} is not loopback and {missing} is not configured: anyone who reaches it would own "
                "the cluster (configure them, or pass --insecure)",
            )
