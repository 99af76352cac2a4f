"""A certificate authority for a cluster, and the certificates it issues.

`tailrace cluster up` makes one CA per cluster directory and one certificate
per process: a member certificate names the member in a URI SAN and carries
the DNS name its peers demand (core/security/identity.py), plus the host it
listens on (an IP or DNS SAN) for clients that verify the address they
dial. Keys are ECDSA P-256, written 0600. Operators with their own PKI issue
equivalent certificates and point `[tls]` at them; this module is also what
the tests use to make expired, foreign and misnamed certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.fileutil import atomic_write
from core.security.identity import Kind, Member, member_dns

DAY = datetime.timedelta(days=1)
_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip
DEFAULT_DAYS = 825  # the longest validity browsers accept for a leaf; renew with `cluster up` on a new dir


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written: `cert_file`, `key_file` (0600)."""

    cert_file: Path
    key_file: Path


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, common_name: str, days: int = 3650) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + days * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: not an EC private key")
        return cls(key, cert)

    def save(self, directory: Path) -> Issued:
        """ca.pem (public) and ca.key (0600) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(directory / "ca.key", _key_pem(self.key), mode=0o600)
        atomic_write(directory / "ca.pem", _cert_pem(self.cert), mode=0o644)
        return Issued(directory / "ca.pem", directory / "ca.key")

    @property
    def pem(self) -> bytes:
        return _cert_pem(self.cert)

    def issue(
        self,
        common_name: str,
        uris: list[str],
        dns: list[str],
        hosts: list[str],
        directory: Path,
        stem: str,
        days: int = DEFAULT_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> Issued:
        """A leaf certificate for server and client use, written as
        `<stem>.pem` and `<stem>.key` (0600) in `directory`."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - DAY
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        sans += [_host_san(h) for h in dict.fromkeys(hosts)]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + days * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(directory / f"{stem}.key", _key_pem(key), mode=0o600)
        atomic_write(directory / f"{stem}.pem", _cert_pem(cert), mode=0o644)
        return Issued(directory / f"{stem}.pem", directory / f"{stem}.key")

    def issue_member(
        self,
        member: Member,
        hosts: list[str],
        directory: Path,
        stem: str,
        days: int = DEFAULT_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> Issued:
        """A member's certificate: its URI, its group's (or the nameservers')
        DNS name, and the hosts clients dial it at (plus localhost)."""
        group = member.name if member.kind is Kind.BROKER else ""
        dns = [member_dns(member.cluster, member.kind, group), "localhost"]
        if member.kind is Kind.BROKER:
            dns.insert(1, member_dns(member.cluster, member.kind, group, member.node))
        hosts = [*hosts, "127.0.0.1"]
        return self.issue(str(member), [member.uri], dns, hosts, directory, stem, days, not_before)
