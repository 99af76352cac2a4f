"""The process harness of tests, benchmarks, the demo and the drills.

`TailraceProcess` starts a `tailrace` process with its own log file and ready
file, waits until it serves, and can `stop` (SIGTERM, keeps its data), `kill`
(SIGKILL), `restart` (same data) and show `log_tail()`. `ProcessGroup` owns
several and always cleans up, even when the code using it fails; it builds
single processes (`nameserver`, `broker`, `slave`), a master with its slaves
(`replica_set`), and nameservers with broker groups and a routed topic
(`cluster`). The waits on a running cluster are in `deploy/waits.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.admin import Admin
from core.security.identity import Kind, Member
from deploy.pki import LocalPki
from deploy.waits import WaitTimeout, poll_until, wait_routed


class ProcessFailed(RuntimeError):
    pass


# Handles of processes left running on purpose (`TailraceProcess.detach`).
_detached: list[subprocess.Popen[bytes]] = []


def keep_detached(proc: subprocess.Popen[bytes]) -> None:
    """Hold the handle of a child left running on purpose (an etcd member of
    `cluster up`, or one restarted) until `reap_detached` finds it exited:
    a dropped handle of a running child raises ResourceWarning."""
    if proc.poll() is None:
        _detached.append(proc)


def reap_detached() -> None:
    """Forget the handles of detached processes that have exited (stopped by
    `cluster down` through their pids): no handle outlives its process."""
    _detached[:] = [p for p in _detached if p.poll() is None]


class TailraceProcess:
    def __init__(
        self, name: str, args: Sequence[str], workdir: Path, exec_prefix: Sequence[str] = ()
    ) -> None:
        """`exec_prefix` runs the process through another command (e.g. into a
        memory cgroup, a network namespace, or over ssh)."""
        self.name = name
        self.exec_prefix = list(exec_prefix)
        self.args = list(args)
        self.workdir = workdir
        self.ready_file = workdir / f"{name}.ready.json"
        self.log_path = workdir / f"{name}.log"  # the process's own log (rotated by size)
        self.out_path = workdir / f"{name}.out"  # its stdout and stderr (start-up errors, crashes)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.profile: Path | None = None  # the client profile that reaches it (a secure group's)

    @property
    def address(self) -> str:
        return str(self.info["address"])

    @property
    def member_address(self) -> str:
        """Where other members reach it (its members' port with TLS; else `address`)."""
        return str(self.info.get("member_address") or self.info["address"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> TailraceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ready_file.exists():
            self.ready_file.unlink()
        log = open(self.out_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                [
                    *self.exec_prefix,
                    sys.executable,
                    "-m",
                    "deploy.cli",
                    *self.args,
                    "--ready-file",
                    str(self.ready_file),
                    "--log-file",
                    str(self.log_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        proc = self.proc
        assert proc is not None
        try:
            poll_until(lambda: self.ready_file.exists() or proc.poll() is not None, timeout_s, self.name)
        except WaitTimeout:
            raise ProcessFailed(f"{self.name} not ready in {timeout_s}s:\n{self.log_tail()}") from None
        if not self.ready_file.exists():
            raise ProcessFailed(f"{self.name} exited with {proc.poll()} before serving:\n{self.log_tail()}")
        self.info = json.loads(self.ready_file.read_text())

    def detach(self) -> None:
        """Leave the process running after this handle is gone: the launcher's
        processes outlive it, and it finds and reaps them by pid. Without this
        the garbage-collected handle of a running child raises ResourceWarning.
        Handles of detached processes that have exited since are reaped and
        dropped."""
        _detached[:] = [p for p in _detached if p.poll() is None]
        if self.proc is not None and self.proc.poll() is None:
            _detached.append(self.proc)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the data stays as a crash leaves it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout_s: float = 30.0) -> TailraceProcess:
        """Start again with the same arguments (and so the same data).

        The listen address (and the members' port, with TLS) is kept when the
        first start picked a port, so clients and slaves reconnect to it.
        """
        if self.running():
            self.stop()
        if self.info.get("address"):
            self.args = _replace_flag(self.args, "--listen", self.info["address"])
        member = self.info.get("member_address")
        if member and member != self.info.get("address"):  # and its members' port (slaves replicate there)
            self.args += ["--set", f"server.member_listen={member}"]
        return self.start(timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in (self.out_path, self.log_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            out += text.splitlines()
        return "\n".join(out[-lines:]) if out else "(no log)"


def _replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


@dataclass
class ReplicaSet:
    """A broker group's processes: its master and its slaves (ids 1, 2, ...)."""

    master: TailraceProcess
    slaves: list[TailraceProcess]


@dataclass
class Cluster:
    """Nameserver addresses and the broker groups registered with them."""

    namesrv: list[str]
    groups: dict[str, ReplicaSet]


class ProcessGroup:
    """Processes started together; `close()` stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, TailraceProcess] = {}
        self.pki: LocalPki | None = None

    def secure(self, cluster: str = "DefaultCluster") -> LocalPki:
        """Processes started from now on serve TLS with accounts on, as
        `tailrace cluster up` runs them: a CA, a certificate each, the
        `admin` account and a client profile (`pki.profile_file`), all
        under this group's directory."""
        self.pki = LocalPki(self.workdir / "pki", cluster)
        self.pki.write_profile([])
        return self.pki

    def _identity(self, name: str, member: Member) -> list[str]:
        return [] if self.pki is None else self.pki.member_flags(member, ["127.0.0.1"], name)

    def nameserver(
        self, name: str = "namesrv", extra: Sequence[str] = (), console: bool = False
    ) -> TailraceProcess:
        """A nameserver on port 0; with `console`, its web console too (port
        0; `info["console_url"]`), with the group's console account when secure."""
        args = ["nameserver", "--listen", "127.0.0.1:0", "--set", "nameserver.expire_check_ms=100"]
        if console:
            args += ["--set", "console.listen=127.0.0.1:0", "--set", "console.refresh_ms=500"]
            args += self.pki.console_flags() if self.pki is not None else []
        if self.pki is not None:
            args += ["--set", f"nameserver.name={name}", "--set", f'nameserver.cluster="{self.pki.cluster}"']
            args += self._identity(name, Member(self.pki.cluster, Kind.NAMESERVER, name))
        proc = TailraceProcess(name, [*args, *extra], self.workdir / name)
        proc.profile = self.pki.profile_file if self.pki else None
        self.processes[name] = proc
        return proc.start()

    def broker(
        self,
        name: str = "broker",
        extra: Sequence[str] = (),
        flush: str = "async",
        segment_bytes: int = 64 * 1024 * 1024,
        namesrv: Sequence[str] = (),
        heartbeat_ms: int = 200,
        group: str | None = None,
        exec_prefix: Sequence[str] = (),
    ) -> TailraceProcess:
        """A master on port 0 with its own data dir. Segments default to 64 MiB
        here (not 1 GiB) so that tests do not pre-warm gigabytes."""
        data = self.workdir / name / "data"
        args = [
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            "--broker-name",
            group or name,
            "--flush",
            flush,
            "--set",
            f"store.segment_bytes={segment_bytes}",
            *(
                ["--namesrv", ",".join(namesrv), "--set", f"broker.heartbeat_ms={heartbeat_ms}"]
                if namesrv
                else []
            ),
        ]
        if self.pki is not None:  # before `extra`, which may override it (a later --set wins)
            node = int(extra[list(extra).index("--broker-id") + 1]) if "--broker-id" in extra else 0
            args += ["--set", f'broker.cluster="{self.pki.cluster}"']
            args += self._identity(name, Member(self.pki.cluster, Kind.BROKER, group or name, node))
        args += extra
        proc = TailraceProcess(name, args, self.workdir / name, exec_prefix)
        proc.profile = self.pki.profile_file if self.pki else None
        self.processes[name] = proc
        return proc.start()

    def slave(
        self,
        name: str,
        master: TailraceProcess,
        broker_id: int = 1,
        extra: Sequence[str] = (),
        **kwargs: Any,
    ) -> TailraceProcess:
        """A slave of `master`'s group (same broker name), its own data dir."""
        group = str(master.info["broker_name"])
        args = ["--role", "slave", "--broker-id", str(broker_id), "--master", master.address]
        args += ["--set", f"broker.master_member={master.member_address}"]
        proc = self.broker(name, extra=[*args, *extra], group=group, **kwargs)
        if proc.info["broker_name"] != group:  # the broker name is the group
            raise ProcessFailed(f"{name} joined {proc.info['broker_name']}, expected {group}")
        return proc

    def replica_set(
        self,
        name: str = "m",
        slaves: int = 1,
        *,
        extra: Sequence[str] = (),
        master_extra: Sequence[str] = (),
        exec_prefix: Sequence[str] = (),
        slave_exec_prefix: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ReplicaSet:
        """A master `name` and `slaves` slaves `name-s1`, `name-s2`, ... (broker
        ids 1, 2, ...), started in that order. `extra` goes to every one of
        them, `master_extra` (e.g. `--replication sync`) to the master only;
        the slaves run under `slave_exec_prefix` (default: the master's);
        other keyword arguments (`namesrv`, `segment_bytes`, `heartbeat_ms`,
        `flush`) go to `broker()`."""
        master = self.broker(name, extra=[*extra, *master_extra], exec_prefix=exec_prefix, **kwargs)
        prefix = exec_prefix if slave_exec_prefix is None else slave_exec_prefix
        replicas = [
            self.slave(f"{name}-s{i}", master, broker_id=i, extra=extra, exec_prefix=prefix, **kwargs)
            for i in range(1, slaves + 1)
        ]
        return ReplicaSet(master, replicas)

    def cluster(
        self,
        groups: Sequence[str] = ("g",),
        *,
        slaves: int = 0,
        nameservers: int = 1,
        topic: str | None = None,
        queues: int = 4,
        console: bool = False,
        **kwargs: Any,
    ) -> Cluster:
        """Nameservers `ns0`, `ns1`, ... and a replica set per group name, each
        registered with every nameserver (keyword arguments as for
        `replica_set`). With `topic`: once every group's master is registered,
        creates it with `queues` queues in every group and waits until the
        nameservers route it to every group with all its brokers. With
        `console`, `ns0` serves the web console."""
        ns_procs = [self.nameserver(f"ns{i}", console=console and i == 0) for i in range(nameservers)]
        ns = [p.address for p in ns_procs]  # clients' ports
        members = [p.member_address for p in ns_procs]  # brokers register at the members' ports
        profile = self.pki.write_profile(ns) if self.pki else None
        sets = {g: self.replica_set(g, slaves, namesrv=members, **kwargs) for g in groups}
        if topic is not None:
            with Admin(namesrv=ns, profile=profile) as admin:
                poll_until(
                    lambda: sorted(admin.masters()) == sorted(groups), 30, f"masters of {list(groups)}"
                )
                admin.create_topic(topic, queues)
            wait_routed(ns, topic, groups=groups, brokers=range(slaves + 1), profile=profile)
        return Cluster(ns, sets)

    def proxy(
        self,
        namesrv: Sequence[str],
        name: str = "proxy",
        extra: Sequence[str] = (),
        exec_prefix: Sequence[str] = (),
    ) -> TailraceProcess:
        """A `tailrace proxy` (RocketMQ 5's v2 protocol) on port 0 for the
        nameservers `namesrv` (their client ports); in a secure group, with
        TLS, the group's accounts and an account of its own. Its v2 endpoint
        is `info["endpoint"]`. `exec_prefix` as for brokers (benchmarks pin it)."""
        args = ["proxy", "--listen", "127.0.0.1:0", "--set", f"proxy.namesrv={','.join(namesrv)}"]
        if self.pki is not None:
            args += self.pki.proxy_flags(name, ["127.0.0.1"], list(namesrv))
        proc = TailraceProcess(name, [*args, *extra], self.workdir / name, exec_prefix)
        proc.profile = self.pki.profile_file if self.pki else None
        self.processes[name] = proc
        return proc.start()

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{p.log_tail()}" for name, p in self.processes.items())

    def close(self) -> None:
        for p in self.processes.values():
            try:
                p.stop(timeout_s=10)
            except Exception:
                p.kill()


@contextmanager
def process_group(workdir: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(workdir)
    try:
        yield group
    except BaseException:
        print(group.logs(), file=sys.stderr)
        raise
    finally:
        group.close()
