"""A local cluster's keys: CA, member certificates, the admin account, the client profile.

`tailrace cluster up` (and the test harness in its secure mode) keep them
under the cluster directory, owner-only:

    DIR/tls/ca.pem, ca.key          the cluster's CA (core/security/certs.py)
    DIR/tls/<process>.pem, .key     one certificate per process, naming it
    DIR/acl.toml                    accounts: `admin` (every permission)
    DIR/client.toml                 the client profile: nameservers, CA, admin keys

Processes get file paths on their command lines (`--set tls.cert_file=...`),
never a secret. Re-running on a directory reuses its CA and accounts.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path

from core.fileutil import atomic_write
from core.security.certs import CertificateAuthority
from core.security.identity import Member

ADMIN = "admin"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LocalPki:
    def __init__(self, directory: Path, cluster: str) -> None:
        self.directory = directory
        self.cluster = cluster
        self.tls_dir = directory / "tls"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        ca_pem, ca_key = self.tls_dir / "ca.pem", self.tls_dir / "ca.key"
        if ca_pem.exists() and ca_key.exists():
            self.ca = CertificateAuthority.load(ca_pem, ca_key)
        else:
            self.ca = CertificateAuthority.create(f"Tailrace {cluster} CA")
            self.ca.save(self.tls_dir)
        self.ca_file = ca_pem
        self.acl_file = directory / "acl.toml"
        self.profile_file = directory / "client.toml"
        self.admin_secret = self._admin_secret()

    def _admin_secret(self) -> str:
        if self.acl_file.exists():
            for entry in tomllib.loads(self.acl_file.read_text()).get("account", []):
                if entry.get("access_key") == ADMIN:
                    return str(entry["secret_key"])
        secret = secrets.token_urlsafe(32)
        text = (
            "# Tailrace accounts (auth.acl_file): reloaded on change; readable by its owner only\n"
            f"[[account]]\naccess_key = {_toml_str(ADMIN)}\nsecret_key = {_toml_str(secret)}\nadmin = true\n"
        )
        atomic_write(self.acl_file, text.encode(), mode=0o600)
        return secret

    def member_flags(self, member: Member, hosts: list[str], stem: str) -> list[str]:
        """The `--set` flags of a process that is `member`, listening on `hosts`."""
        issued = self.ca.issue_member(member, hosts, self.tls_dir, stem)
        return [
            *("--set", f"tls.ca_file={_toml_str(str(self.ca_file))}"),
            *("--set", f"tls.cert_file={_toml_str(str(issued.cert_file))}"),
            *("--set", f"tls.key_file={_toml_str(str(issued.key_file))}"),
            *("--set", f"auth.acl_file={_toml_str(str(self.acl_file))}"),
        ]

    def write_profile(self, namesrv: list[str]) -> Path:
        """DIR/client.toml: what every command and client library takes
        (`--profile`, `TAILRACE_PROFILE`)."""
        text = (
            "# Tailrace client profile: pass --profile FILE or set TAILRACE_PROFILE. Owner-only.\n"
            f"namesrv = [{', '.join(_toml_str(a) for a in namesrv)}]\n"
            f"ca_file = {_toml_str(str(self.ca_file))}\n"
            f"access_key = {_toml_str(ADMIN)}\n"
            f"secret_key = {_toml_str(self.admin_secret)}\n"
        )
        atomic_write(self.profile_file, text.encode(), mode=0o600)
        return self.profile_file
