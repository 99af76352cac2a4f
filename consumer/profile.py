"""The client profile: where a cluster is and how a client proves itself to it.

`tailrace cluster up` writes one for its cluster (readable by its owner
only: it holds a secret key):

    namesrv = ["127.0.0.1:41234", "127.0.0.1:41235"]   # the nameservers' client ports
    ca_file = "/abs/dir/tls/ca.pem"     # verify servers with this CA (omit: plaintext)
    access_key = "admin"                # with secret_key: every call is signed
    secret_key = "..."                  # (omit both: unsigned, anonymous)
    server_name = ""                    # TLS name to verify instead of the dialed host
    rocketmq_endpoints = ["127.0.0.1:41236"]   # `tailrace proxy` v2 endpoints (RocketMQ 5 clients)

A relative `ca_file` is taken from the profile's directory. Every client
takes `profile=` (a path or a loaded `Profile`); without one, the file
named by `$TAILRACE_PROFILE`; without that, plaintext and unsigned, the
development setup. `ClientSecurity` is what the channels need of it
(consumer/channels.py), and what the client internals take.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from core.errors import ConfigError
from core.security.tls import check_private

ENV = "TAILRACE_PROFILE"
_KEYS = frozenset({"namesrv", "ca_file", "access_key", "secret_key", "server_name", "rocketmq_endpoints"})
_ACCESS_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")  # what the signature header carries


@dataclass(frozen=True)
class ClientSecurity:
    """How a client opens its channels: TLS verified with `ca_pem` (None:
    plaintext), checking `server_name` instead of the dialed host when set;
    every call signed with the account when `access_key` is set. `ca_file`
    only names the CA in error messages."""

    ca_pem: bytes | None = None
    server_name: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    ca_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.access_key) != bool(self.secret_key):
            raise ConfigError("access_key", "give access_key and secret_key together (or neither)")
        if self.access_key and not _ACCESS_KEY.fullmatch(self.access_key):
            raise ConfigError("access_key", "must match [A-Za-z0-9_.-]{1,128}")

    @classmethod
    def plaintext(cls) -> ClientSecurity:
        """No TLS, no signature: a development cluster on loopback."""
        return PLAINTEXT

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None

    @property
    def signed(self) -> bool:
        return bool(self.access_key)


PLAINTEXT = ClientSecurity()


@dataclass(frozen=True)
class Profile:
    """A loaded profile (`Profile.load`); `Profile()` is the empty one:
    no nameservers, plaintext, unsigned."""

    namesrv: tuple[str, ...] = ()
    ca_file: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    server_name: str = ""
    path: Path | None = None
    ca_pem: bytes | None = field(default=None, repr=False)
    rocketmq_endpoints: tuple[str, ...] = ()  # for official RocketMQ 5 clients (not used by ours)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and check a profile file. Raises `ConfigError` naming the file
        for one readable by others, unknown keys, values of the wrong type,
        a half-given account, or a CA file that is missing or not PEM."""
        path = Path(path)
        where = f"profile {path}"
        check_private(str(path), where)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(where, f"cannot read it: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(where, f"not valid TOML: {str(exc)[:200]}") from exc
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(where, f"unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
        namesrv = data.get("namesrv", [])
        if not isinstance(namesrv, list) or not all(_is_address(a) for a in namesrv):
            raise ConfigError(f"{where}: namesrv", 'must be a list of "host:port" strings')
        rocketmq = data.get("rocketmq_endpoints", [])
        if not isinstance(rocketmq, list) or not all(_is_address(a) for a in rocketmq):
            raise ConfigError(f"{where}: rocketmq_endpoints", 'must be a list of "host:port" strings')
        text = {k: data.get(k, "") for k in ("ca_file", "access_key", "secret_key", "server_name")}
        for key, value in text.items():
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key}", f"must be a string, not {type(value).__name__}")
        ca_file = text["ca_file"]
        ca_pem = None
        if ca_file:
            ca_file = str(path.parent / ca_file)  # an absolute one stays as it is
            ca_pem = _read_ca(ca_file, where)
        profile = cls(
            tuple(namesrv), ca_file, text["access_key"], text["secret_key"], text["server_name"],
            path, ca_pem, tuple(rocketmq),
        )  # fmt: skip
        try:
            profile.security()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.key}", exc.reason) from None
        return profile

    @classmethod
    def from_env(cls) -> Profile | None:
        """The profile `$TAILRACE_PROFILE` names, or None when it is unset or empty."""
        path = os.environ.get(ENV, "")
        return cls.load(path) if path else None

    @classmethod
    def resolve(cls, profile: str | Path | Profile | None) -> Profile:
        """What a client was given: a loaded profile as it is, a path loaded,
        None the `$TAILRACE_PROFILE` one, else the empty profile (plaintext)."""
        if isinstance(profile, Profile):
            return profile
        if profile is not None:
            return cls.load(profile)
        return cls.from_env() or EMPTY

    def security(self) -> ClientSecurity:
        return ClientSecurity(self.ca_pem, self.server_name, self.access_key, self.secret_key, self.ca_file)

    def target(
        self, broker: str | None, namesrv: Sequence[str] | str | None
    ) -> tuple[str | None, Sequence[str] | str | None]:
        """(broker, namesrv) a client uses: as given, or the profile's
        nameservers when it was given neither."""
        if broker is None and namesrv is None and self.namesrv:
            return None, list(self.namesrv)
        return broker, namesrv


EMPTY = Profile()


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and ":" in value and 0 < len(value) <= 255


def _read_ca(ca_file: str, where: str) -> bytes:
    try:
        pem = Path(ca_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: ca_file", f"cannot read {ca_file}: {exc.strerror}") from exc
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: ca_file", f"{ca_file} is not a PEM certificate: {exc}") from exc
    return pem


def client_setup(
    profile: str | Path | Profile | None,
    broker: str | None,
    namesrv: Sequence[str] | str | None,
) -> tuple[ClientSecurity, str | None, Sequence[str] | str | None]:
    """What a top-level client starts with: its channels' security and its
    target (broker, namesrv), the profile's nameservers when it was given
    neither."""
    p = Profile.resolve(profile)
    broker, namesrv = p.target(broker, namesrv)
    return p.security(), broker, namesrv
