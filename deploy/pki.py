"""A local cluster's keys: CA, member certificates, the admin account, the client profile.

`tailrace cluster up` (and the test harness in its secure mode) keep them
under the cluster directory, owner-only:

    DIR/tls/ca.pem, ca.key          the cluster's CA (core/security/certs.py)
    DIR/tls/<process>.pem, .key     one certificate per process, naming it
    DIR/acl.toml                    accounts: `admin` (every permission), `proxy`, `console` (monitor)
    DIR/client.toml                 the client profile: nameservers, CA, admin keys
    DIR/proxy.toml                  `tailrace proxy`'s own profile: nameservers, CA, proxy keys
    DIR/console.toml                the web console's profile: CA, console keys (deploy/console/)

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
PROXY = "proxy"  # `tailrace proxy`'s account: publish and subscribe on every topic, every group
PROXY_GRANTS = 'publish = ["*"]\nsubscribe = ["*"]\ngroups = ["*"]\nproxy = true\n'
# the nameserver's web console asks the brokers as this account, and an operator signs in to
# the page with it: monitor only (review R1), the reads the console shows (DescribeGroups, queue
# offsets), so its key, in the nameserver and in a browser, signs no reset, delete or message read
CONSOLE = "console"
CONSOLE_GRANTS = "monitor = true\n"


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
        self.proxy_profile_file = directory / "proxy.toml"
        self.console_profile_file = directory / "console.toml"
        self.admin_secret, self.proxy_secret, self.console_secret = self._accounts()

    def _accounts(self) -> tuple[str, str, str]:
        """The admin's, the proxy's and the console's secrets: as the ACL
        file has them, the missing ones added."""
        text = self.acl_file.read_text() if self.acl_file.exists() else ""
        found = {
            str(e.get("access_key")): str(e.get("secret_key")) for e in tomllib.loads(text).get("account", [])
        }
        if not text:
            text = "# Tailrace accounts (auth.acl_file): reloaded on change; readable by its owner only\n"
        for key, grants in ((ADMIN, "admin = true\n"), (PROXY, PROXY_GRANTS), (CONSOLE, CONSOLE_GRANTS)):
            if key not in found:
                found[key] = secrets.token_urlsafe(32)
                secret = _toml_str(found[key])
                text += f"[[account]]\naccess_key = {_toml_str(key)}\nsecret_key = {secret}\n{grants}"
                atomic_write(self.acl_file, text.encode(), mode=0o600)
        return found[ADMIN], found[PROXY], found[CONSOLE]

    def member_flags(self, member: Member, hosts: list[str], stem: str) -> list[str]:
        """The `--set` flags of a process that is `member`, listening on `hosts`."""
        issued = self.ca.issue_member(member, hosts, self.tls_dir, stem)
        return [
            *("--set", f"tls.ca_file={_toml_str(str(self.ca_file))}"),
            *("--set", f"tls.cert_file={_toml_str(str(issued.cert_file))}"),
            *("--set", f"tls.key_file={_toml_str(str(issued.key_file))}"),
            *("--set", f"auth.acl_file={_toml_str(str(self.acl_file))}"),
        ]

    def write_profile(self, namesrv: list[str], rocketmq_endpoints: list[str] | None = None) -> Path:
        """DIR/client.toml: what every command and client library takes
        (`--profile`, `TAILRACE_PROFILE`); `rocketmq_endpoints`: the
        proxies' v2 endpoints, for RocketMQ 5's official clients."""
        text = (
            "# Tailrace client profile: pass --profile FILE or set TAILRACE_PROFILE. Owner-only.\n"
            f"namesrv = [{', '.join(_toml_str(a) for a in namesrv)}]\n"
            f"ca_file = {_toml_str(str(self.ca_file))}\n"
            f"access_key = {_toml_str(ADMIN)}\n"
            f"secret_key = {_toml_str(self.admin_secret)}\n"
        )
        if rocketmq_endpoints:
            text += f"rocketmq_endpoints = [{', '.join(_toml_str(a) for a in rocketmq_endpoints)}]\n"
        atomic_write(self.profile_file, text.encode(), mode=0o600)
        return self.profile_file

    def proxy_flags(self, name: str, hosts: list[str], namesrv: list[str]) -> list[str]:
        """The `--set` flags of a `tailrace proxy`: a server certificate for
        its hosts that names no member (it is a client of the cluster), the
        accounts file the v2 signatures are checked against, and its own
        profile (DIR/proxy.toml: the proxy account's keys)."""
        issued = self.ca.issue(f"proxy {name}", [], ["localhost"], [*hosts, "127.0.0.1"], self.tls_dir, name)
        text = (
            "# tailrace proxy's own client profile (its account). Owner-only.\n"
            f"namesrv = [{', '.join(_toml_str(a) for a in namesrv)}]\n"
            f"ca_file = {_toml_str(str(self.ca_file))}\n"
            f"access_key = {_toml_str(PROXY)}\n"
            f"secret_key = {_toml_str(self.proxy_secret)}\n"
        )
        atomic_write(self.proxy_profile_file, text.encode(), mode=0o600)
        return [
            *("--set", f"tls.ca_file={_toml_str(str(self.ca_file))}"),
            *("--set", f"tls.cert_file={_toml_str(str(issued.cert_file))}"),
            *("--set", f"tls.key_file={_toml_str(str(issued.key_file))}"),
            *("--set", f"auth.acl_file={_toml_str(str(self.acl_file))}"),
            *("--set", f"proxy.profile={_toml_str(str(self.proxy_profile_file))}"),
        ]

    def console_flags(self) -> list[str]:
        """The `--set` flags that give a nameserver's console its profile
        (DIR/console.toml: the CA and the console account's keys; the
        console asks its own nameserver, so the profile names none)."""
        text = (
            "# the nameserver's web console's own client profile (its account). Owner-only.\n"
            f"ca_file = {_toml_str(str(self.ca_file))}\n"
            f"access_key = {_toml_str(CONSOLE)}\n"
            f"secret_key = {_toml_str(self.console_secret)}\n"
        )
        atomic_write(self.console_profile_file, text.encode(), mode=0o600)
        return ["--set", f"console.profile={_toml_str(str(self.console_profile_file))}"]
