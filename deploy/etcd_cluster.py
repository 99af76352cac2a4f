"""A local etcd cluster of real processes, for tests and drills.

`LocalEtcd(directory, members=3)` starts N `etcd` members on one host, each
with its data dir and log file under `directory`; it can `kill` (SIGKILL),
`stop_member` (SIGTERM), `restart` (same data and ports) one member, tell
which is the leader, and `stop()` kills everything it started (always; twice
is fine; also at interpreter exit). Use it as a context manager.

Ports: etcd cannot report a port the OS picked, so each start binds port 0
on the host for every client and peer port, reads the ports, closes the
sockets and hands them to etcd. Another process can take one in between:
when a member then fails to bind, the whole start is retried on new ports
(fresh data dirs), up to `START_ATTEMPTS` times.

Timings are short for CI and stable on a loaded two-core machine: heartbeat
100 ms, election timeout 1000 ms; etcd raises lease TTLs below 1.5 election
timeouts (rounded up to a second) to `MIN_LEASE_TTL_S` = 2 s.

Optional TLS (`EtcdTls`): the same CA, certificate and key for the client
and peer ports, with client certificates required on both; the certificate
must name the host (an IP SAN for an address) and allow client and server
use (`CertificateAuthority.issue` makes such). `tls.client_context()` is
what an `EtcdClient` connects with.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from core.etcd import EtcdClient, EtcdError
from deploy.harness import keep_detached
from deploy.waits import WaitTimeout, poll_until

log = logging.getLogger(__name__)
HEARTBEAT_MS = 100
ELECTION_MS = 1000
MIN_LEASE_TTL_S = 2  # etcd's minimum at these timings: ceil(1.5 * ELECTION_MS / 1000)
START_ATTEMPTS = 3
_BIND_FAILED = "address already in use"
_running: weakref.WeakSet[LocalEtcd] = weakref.WeakSet()


class EtcdFailed(RuntimeError):
    """An etcd cluster did not start (its members' log tails attached)."""


@dataclass(frozen=True)
class EtcdTls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    peer_cn: str = ""  # when set, only a certificate with this CN may join as a peer

    def client_context(self) -> ssl.SSLContext:
        """Verifies members against the CA and presents the certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def flags(self) -> list[str]:
        files = ["--cert-file", str(self.cert_file), "--key-file", str(self.key_file)]
        return [
            *files, "--trusted-ca-file", str(self.ca_file), "--client-cert-auth",
            *("--peer" + f[1:] if f.startswith("--") else f for f in files),
            "--peer-trusted-ca-file", str(self.ca_file), "--peer-client-cert-auth",
            *(["--peer-cert-allowed-cn", self.peer_cn] if self.peer_cn else []),
        ]  # fmt: skip


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)


def free_ports(host: str, n: int) -> list[int]:
    """n distinct ports the OS had free on `host` a moment ago (all bound at once)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdMember:
    def __init__(self, name: str, client_url: str, peer_url: str, data_dir: Path, log_path: Path) -> None:
        self.name = name
        self.client_url = client_url
        self.peer_url = peer_url
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        return f"EtcdMember({self.name}, pid={self.pid}, client={self.client_url}, peer={self.peer_url})"


class LocalEtcd:
    def __init__(
        self,
        directory: Path,
        members: int = 3,
        host: str = "127.0.0.1",
        tls: EtcdTls | None = None,
        binary: str | None = None,
    ) -> None:
        if members < 1:
            raise ValueError(f"members must be at least 1, not {members}")
        self.directory = directory
        self.size = members
        self.host = host
        self.tls = tls
        self.binary = binary or etcd_binary() or "etcd"
        self.members: list[EtcdMember] = []
        self._ssl = tls.client_context() if tls else None

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def client(self, timeout_s: float = 2.0, members: list[int] | None = None) -> EtcdClient:
        """A client of these members (all by default), over TLS when the cluster has it."""
        chosen = [self.members[i] for i in members] if members is not None else self.members
        return EtcdClient([m.client_url for m in chosen], timeout_s, self._ssl)

    # -- starting ------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> LocalEtcd:
        """Start every member and wait until each answers a linearizable read."""
        if not os.access(self.binary, os.X_OK) and shutil.which(self.binary) is None:
            raise EtcdFailed(f"etcd not found ({self.binary}): install Debian's etcd-server (make etcd)")
        self.directory.mkdir(parents=True, exist_ok=True)
        _running.add(self)
        for attempt in range(1, START_ATTEMPTS + 1):
            self._plan()
            for m in self.members:
                self._spawn(m)
            try:
                self._wait(timeout_s, linearizable=True)
                return self
            except EtcdFailed as exc:
                self.stop()
                if attempt == START_ATTEMPTS or not self._bind_failed():
                    raise exc from None
                log.warning("etcd: a port was taken before etcd bound it; starting again on new ports")
        raise AssertionError("unreachable")

    def _plan(self) -> None:
        scheme = "https" if self.tls else "http"
        ports = free_ports(self.host, 2 * self.size)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.members = []
        for i in range(self.size):
            data_dir = self.directory / f"etcd{i}.data"
            shutil.rmtree(data_dir, ignore_errors=True)
            self.members.append(
                EtcdMember(
                    f"etcd{i}",
                    f"{scheme}://{host}:{ports[2 * i]}",
                    f"{scheme}://{host}:{ports[2 * i + 1]}",
                    data_dir,
                    self.directory / f"etcd{i}.log",
                )
            )
        self._token = f"tailrace-{uuid.uuid4().hex[:12]}"

    def _args(self, m: EtcdMember) -> list[str]:
        cluster = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        args = [
            self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-token", self._token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr",
        ]  # fmt: skip
        return args + (self.tls.flags() if self.tls else [])

    def _spawn(self, m: EtcdMember) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(m.log_path, "ab") as out:
            out.write(f"--- tailrace: starting {m.name} ({m.client_url}, peer {m.peer_url})\n".encode())
            out.flush()
            m.proc = subprocess.Popen(
                self._args(m), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def _serves(self, i: int, linearizable: bool) -> bool:
        m = self.members[i]
        if m.proc is None or m.proc.poll() is not None:
            raise EtcdFailed(f"{m.name} exited with {m.proc and m.proc.poll()}")
        with self.client(0.5, [i]) as c:
            try:
                c.get(b"tailrace/health", serializable=not linearizable)
                return True
            except EtcdError:
                return False

    def _wait(self, timeout_s: float, linearizable: bool, only: int | None = None) -> None:
        pending = [only] if only is not None else list(range(self.size))

        def all_serve() -> bool:
            pending[:] = [i for i in pending if not self._serves(i, linearizable)]
            return not pending

        try:
            poll_until(all_serve, timeout_s, "etcd members serving", every_s=0.05)
        except (WaitTimeout, EtcdFailed) as exc:
            tails = "\n".join(f"--- {self.members[i].name}:\n{self.log_tail(i)}" for i in pending)
            raise EtcdFailed(f"etcd did not start: {exc}\n{tails}") from None

    def _bind_failed(self) -> bool:
        return any(_BIND_FAILED in self.log_tail(i, 200) for i in range(len(self.members)))

    # -- faults and stopping -----------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member i (its data stays as a crash leaves it)."""
        proc = self.members[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop_member(self, i: int, timeout_s: float = 10.0) -> None:
        """SIGTERM member i and wait; SIGKILL if it does not exit in time."""
        proc = self.members[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(i)

    def restart(self, i: int, timeout_s: float = 30.0) -> None:
        """Start member i again on its data and ports; waits until it serves
        (a serializable read: it need not have a leader)."""
        self.stop_member(i)
        self._spawn(self.members[i])
        self._wait(timeout_s, linearizable=False, only=i)

    def detach(self) -> None:
        """Let the members outlive this process (`tailrace cluster up`: the
        cluster state has their pids and command lines)."""
        _running.discard(self)
        for m in self.members:
            if m.proc is not None:
                keep_detached(m.proc)

    def args(self, i: int) -> list[str]:
        """Member i's command line (restarting it on its data dir and ports)."""
        return self._args(self.members[i])

    def stop(self) -> None:
        """SIGKILL every member still running (data dirs stay)."""
        for i in range(len(self.members)):
            self.kill(i)
        _running.discard(self)

    def leader_index(self) -> int | None:
        """The member the running members report as leader, if one of them is."""
        ids: dict[int, int] = {}
        leaders: set[int] = set()
        for i, m in enumerate(self.members):
            if not m.running():
                continue
            try:
                with self.client(0.5, [i]) as c:
                    member_id, leader = c.member_status()
            except EtcdError:
                continue
            ids[member_id] = i
            leaders.add(leader)
        found = [ids[leader] for leader in leaders if leader in ids]
        return found[0] if len(found) == 1 else None

    def wait_leader(self, timeout_s: float = 10.0, not_index: int | None = None) -> int:
        """Poll until a running member leads (other than `not_index`); its index."""
        found: list[int] = []

        def elected() -> bool:
            i = self.leader_index()
            found[:] = [i] if i is not None and i != not_index else []
            return bool(found)

        poll_until(elected, timeout_s, "an etcd leader", every_s=0.05)
        return found[0]

    def log_tail(self, i: int, lines: int = 40) -> str:
        try:
            text = self.members[i].log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalEtcd:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for cluster in list(_running):
        cluster.stop()
