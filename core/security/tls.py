"""TLS for every gRPC port: the `[tls]` config and the credentials built from it.

A process with `[tls]` configured serves two ports from one gRPC server:

- the **client port** (`listen`): TLS with this process's certificate;
  clients verify it against the CA and prove who they are per request
  (core/security/signing.py). gRPC's Python API cannot ask a client for a
  certificate without requiring one, so the two kinds of caller need two
  ports, as Kafka's listeners and RocketMQ's HA port do;
- the **member port** (`member_listen`): mutual TLS, a certificate from the
  cluster's CA required; the member it names (core/security/identity.py)
  is the caller.

gRPC's TLS stack negotiates TLS 1.2 or 1.3 only. Certificates are checked
when the process starts (`load_tls`): readable key, not readable by others,
signed by the CA, valid now, naming the member this process is, so a bad
certificate ends the start with a message naming the file instead of
failing every handshake later.
"""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from core.config import require
from core.errors import ConfigError
from core.security.identity import Kind, Member, member_dns


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class TlsSection:
    ca_file: str = field(default="", metadata=_doc("PEM CA certificate(s) of the cluster; empty: no TLS"))
    cert_file: str = field(default="", metadata=_doc("this process's certificate (PEM), naming the member"))
    key_file: str = field(default="", metadata=_doc("its private key (PEM, readable by the owner only)"))

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)

    def validate(self, prefix: str = "tls") -> None:
        given = [bool(self.ca_file), bool(self.cert_file), bool(self.key_file)]
        together = all(given) or not any(given)
        require(together, prefix, "set ca_file, cert_file and key_file together (or none)")


@dataclass(frozen=True)
class ServerTls:
    """This process's verified certificate material."""

    ca_pem: bytes
    cert_pem: bytes
    member: Member
    not_after: datetime.datetime
    key_pem: bytes = field(repr=False, default=b"")

    def client_port(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])

    def member_port(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def member_channel(
        self,
        target: str,
        peer: Kind,
        group: str = "",
        options: Sequence[tuple[str, Any]] = (),
        node: int | None = None,
    ) -> grpc.Channel:
        """A mutual-TLS channel to another member's member port that succeeds
        only if the peer's certificate is from this cluster's CA and names a
        member of `peer` kind (a broker of `group`; with `node`, that node)."""
        creds = grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)
        name = member_dns(self.member.cluster, peer, group, node)
        return grpc.secure_channel(target, creds, options=[*options, ("grpc.ssl_target_name_override", name)])


def _read(path: str, what: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read the {what} {path}: {exc.strerror}") from exc


def check_private(path: str, key: str) -> None:
    """A secret file must be this user's, not a symlink, and not readable by
    group or others (as ssh insists)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(key, f"{path} is a symlink; point the config at the file itself")
    if st.st_uid != os.geteuid():
        raise ConfigError(key, f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st.st_mode)
        raise ConfigError(key, f"{path} is readable by others (mode {mode:o}); chmod 600 it")


def _load_checked(
    section: TlsSection, now: datetime.datetime | None
) -> tuple[bytes, bytes, bytes, x509.Certificate]:
    """(CA, certificate, key) PEMs and the certificate, checked: signed by the
    CA, valid now, its key private. Raises `ConfigError` naming the file."""
    ca_pem = _read(section.ca_file, "CA certificate", "tls.ca_file")
    cert_pem = _read(section.cert_file, "certificate", "tls.cert_file")
    check_private(section.key_file, "tls.key_file")
    key_pem = _read(section.key_file, "private key", "tls.key_file")
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError("tls", f"{section.ca_file} or {section.cert_file} is not PEM: {exc}") from exc
    now = now or datetime.datetime.now(datetime.UTC)
    problem = certificate_problem(cert, cas, now)
    if problem:
        raise ConfigError("tls.cert_file", f"{section.cert_file}: {problem}")
    return ca_pem, cert_pem, key_pem, cert


def load_tls(section: TlsSection, expect: Member, now: datetime.datetime | None = None) -> ServerTls:
    """Read and check this process's certificate: signed by the CA, valid
    now, naming `expect`, its key private. Raises `ConfigError` naming the file."""
    ca_pem, cert_pem, key_pem, cert = _load_checked(section, now)
    named = uris_of(cert)
    if expect.uri not in named:
        raise ConfigError(
            "tls.cert_file", f"{section.cert_file} names {named or 'no member'}, but this process is {expect}"
        )
    return ServerTls(ca_pem, cert_pem, expect, cert.not_valid_after_utc, key_pem)


def client_port_credentials(
    section: TlsSection, now: datetime.datetime | None = None
) -> grpc.ServerCredentials:
    """TLS for a process that only serves clients (`tailrace proxy`): its
    certificate checked as a member's is, but naming no member (the proxy
    is a client of the cluster, never a member), and no client certificate
    asked for."""
    _, cert_pem, key_pem, _ = _load_checked(section, now)
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


def certificate_problem(cert: x509.Certificate, cas: list[x509.Certificate], now: datetime.datetime) -> str:
    """Why `cert` would be refused by a peer trusting `cas` ("" if it would not)."""
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return ""
        except Exception:  # a wrong key type, a bad signature: not this CA
            continue
    issuer = cert.issuer.rfc4514_string()
    return f"issued by {issuer!r}, which is not the configured CA"


def uris_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def explain_handshake_failure(details: str, address: str, ca_file: str = "") -> str:
    """A client's plain-words reading of gRPC's handshake errors ("" if the
    failure was not a TLS one)."""
    d = details or ""
    ca = f" (CA: {ca_file})" if ca_file else ""
    if "Hostname Verification" in d or "No match found for server name" in d:
        return f"{address}'s certificate does not name the host or member expected{ca}"
    if "CERTIFICATE_VERIFY_FAILED" in d or "certificate verify failed" in d or "Cert verify failed" in d:
        return f"{address}'s certificate is not trusted: expired, or not from the cluster's CA{ca}"
    if "WRONG_VERSION_NUMBER" in d or "wrong version number" in d:
        return f"{address} does not speak TLS (a plaintext port?), or speaks it where plaintext was expected"
    if "Socket closed" in d or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in d:
        return ""  # also a plain disconnect: not conclusive
    if "SSL" in d or "TLS" in d or "handshake" in d.lower():
        return f"TLS handshake with {address} failed: {d[:200]}{ca}"
    return ""
