"""`tailrace cluster up|down|status|kill|stop|start`: a cluster of processes.

A topology (TOML, `deploy/topologies/`) names nameservers and broker groups
(a master and N slaves each), with per-group `set` overrides and an optional
`exec_prefix` per host (e.g. `ip netns exec NAME`, `ssh HOST`). `up` starts
every process in the background with its own data dir, log and ready file
under DIR, waits until all serve and every broker is registered, and writes
`DIR/cluster.json`; on any failure it stops what it started and prints the
failing process's log tail. The processes outlive the command. A topology
with `[cluster] rocketmq_proxies = N` also gets N `tailrace proxy` processes
(RocketMQ 5's official clients), started once the brokers are registered;
their v2 endpoints are `rocketmq_endpoints` in cluster.json and in the
client profile. The first nameserver serves the web console (port 0 on its
host; deploy/console/); its address is `console_url` in cluster.json.

Secure by default (deploy/pki.py): `up` makes the cluster's CA under
DIR/tls, a certificate per process, an `admin` account (DIR/acl.toml) and
the client profile DIR/client.toml (nameservers, CA, keys) that every
command takes (`--profile`, `TAILRACE_PROFILE`); every process serves TLS
with accounts on. Command lines and cluster.json hold file paths, never a
secret; DIR is owner-only. `up --insecure` runs the old plaintext cluster
(loopback only: benchmarks' baselines), its replication secret in an
owner-only config file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import TailraceError
from core.fileutil import atomic_write
from core.security.config import is_loopback
from core.security.identity import Kind, Member
from deploy.cluster_etcd import controller_flags, restart_member, start_etcd
from deploy.etcd_cluster import EtcdFailed
from deploy.harness import ProcessFailed, TailraceProcess, reap_detached
from deploy.pki import LocalPki
from deploy.topology import Topology, load_topology
from deploy.waits import WaitTimeout, poll_until

STATE = "cluster.json"


def _save_state(directory: Path, state: dict[str, Any]) -> None:
    """cluster.json holds every process's arguments, the cluster secret among
    them: readable by its owner only."""
    atomic_write(directory / STATE, json.dumps(state, indent=1).encode(), mode=0o600)


def _alive(pid: int) -> bool:
    _reap(pid)  # a child of this process that exited is a zombie until reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(directory: Path) -> dict[str, Any] | None:
    f = directory / STATE
    return json.loads(f.read_text()) if f.exists() else None


def up(
    topology_path: Path,
    directory: Path,
    broker_sets: list[str] | None = None,
    tune: Callable[[Topology], None] | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Start the cluster; `broker_sets` ("section.key=value") apply to every
    broker; `tune` may adjust the loaded topology (drills: fast timings);
    `insecure`: plaintext, no accounts (loopback hosts only)."""
    state = read_state(directory)
    if state and any(_alive(p["pid"]) for p in state["processes"]):
        raise TailraceError(f"a cluster is already running in {directory} (tailrace cluster down first)")
    topo = load_topology(topology_path)
    if tune is not None:
        tune(topo)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # keys, accounts and logs: the owner's only
    pki = None if insecure else LocalPki(directory, topo.cluster)
    started: list[tuple[TailraceProcess, dict[str, Any]]] = []
    common = [
        *("--set", f"store.segment_bytes={topo.segment_bytes}"),
        *("--set", f"broker.heartbeat_ms={topo.heartbeat_ms}"),
    ]
    if pki is None:
        common += ["--config", str(_secret_config(directory, topo))]
    for item in broker_sets or []:
        common += ["--set", item]

    def identity(name: str, member: Member, host: str) -> list[str]:
        """A process's certificate flags (none when insecure)."""
        if pki is None:
            if not is_loopback(topo.hosts[host].listen_host):
                raise TailraceError(f"--insecure clusters listen on loopback only ({name} is on {host})")
            return []
        return pki.member_flags(member, [topo.hosts[host].listen_host], name)

    def start(name: str, args: list[str], meta: dict[str, Any], host: str) -> TailraceProcess:
        h = topo.hosts[host]
        args = [*args[:1], "--listen", f"{h.listen_host}:0", *args[1:]]
        proc = TailraceProcess(name, args, directory / name, h.exec_prefix)
        try:
            proc.start()
        except ProcessFailed:
            started.append((proc, meta))
            raise
        started.append((proc, meta))
        return proc

    etcd = None
    etcd_rows: list[dict[str, Any]] = []
    try:
        if topo.etcd_members:
            etcd, etcd_rows = start_etcd(directory, topo, pki)
        ns_addrs: list[str] = []
        ns_members: list[str] = []
        for i, (n, host) in enumerate(topo.nameservers):
            ctl: list[str] = []
            if i < topo.controllers():
                ctl = [
                    *("--set", "controller.enabled=true"),
                    *("--set", f"controller.data_dir={json.dumps(str(directory / n / 'controller'))}"),
                    *("--set", f"controller.lease_ms={topo.lease_ms}"),
                ]
                if etcd is not None:
                    ctl += controller_flags(topo, etcd.endpoints, pki is not None)
            if topo.drills:
                ctl += ["--set", "server.enable_drills=true"]
            meta = {"role": "nameserver", "group": None, "broker_id": None, "controller": bool(ctl)}
            named = [
                "--set",
                f"nameserver.cluster={json.dumps(topo.cluster)}",
                "--set",
                f"nameserver.name={n}",
            ]
            member = Member(topo.cluster, Kind.NAMESERVER, n)
            if i == 0:  # the web console, on the first nameserver (deploy/console/)
                named += ["--set", f"console.listen={topo.hosts[host].listen_host}:0"]
                named += pki.console_flags() if pki is not None else []
            p = start(n, ["nameserver", *ctl, *named, *identity(n, member, host)], meta, host)
            ns_addrs.append(p.address)
            ns_members.append(_member_address(p))
        if pki is not None:
            pki.write_profile(ns_addrs)
        namesrv = ",".join(ns_members)  # brokers register at the members' ports
        if topo.failover:  # node ids from 1; the controller (its leader) decides who leads
            common += [
                *("--set", f"broker.controller={','.join(ns_members[: topo.controllers()])}"),
                *("--set", f"broker.controller_heartbeat_ms={topo.controller_heartbeat_ms}"),
            ]
        first_id = 1 if topo.failover else 0
        for g in topo.groups:
            sets = [x for k, v in g.settings.items() for x in ("--set", f"{k}={v}")]
            base = [
                "broker",
                "--broker-name",
                g.name,
                "--namesrv",
                namesrv,
                *("--set", f"broker.cluster={json.dumps(topo.cluster)}"),
                *common,
                *sets,
            ]
            m = start(
                g.name,
                [
                    *base,
                    *("--data-dir", str(directory / g.name / "data"), "--broker-id", str(first_id)),
                    *("--replication", g.replication),
                    *identity(g.name, Member(topo.cluster, Kind.BROKER, g.name, first_id), g.host),
                ],
                {"role": "master", "group": g.name, "broker_id": first_id},
                g.host,
            )
            for i in range(1, g.slaves + 1):
                name = f"{g.name}-s{i}"
                node = first_id + i
                slave_args = ["--role", "slave", "--broker-id", str(node), "--master", m.address]
                slave_args += ["--set", f"broker.master_member={_member_address(m)}"]
                # a slave promoted later serves with the group's replication mode
                slave_args += ["--replication", g.replication]
                host = g.slave_hosts[i - 1] if i <= len(g.slave_hosts) else g.host
                slave_args += identity(name, Member(topo.cluster, Kind.BROKER, g.name, node), host)
                start(
                    name,
                    [*base, "--data-dir", str(directory / name / "data"), *slave_args],
                    {"role": "slave", "group": g.name, "broker_id": node},
                    host,
                )
        _wait_registered(ns_addrs, topo, pki.profile_file if pki is not None else None)
        rocketmq_endpoints = _start_proxies(topo, pki, ns_addrs, start)
    except (ProcessFailed, TailraceError, EtcdFailed) as exc:
        for proc, _ in reversed(started):
            proc.stop(timeout_s=10)
        if etcd is not None:
            etcd.stop()
        failing = started[-1][0] if started else None
        tail = failing.log_tail() if failing is not None else ""
        raise TailraceError(
            f"cluster up failed at {failing.name if failing else '?'}: {exc}\n{tail}"
        ) from exc
    state = {
        "topology": str(topology_path),
        "secure": pki is not None,
        "profile": str(pki.profile_file) if pki is not None else "",
        "processes": [
            {
                "name": proc.name,
                **meta,
                "address": proc.address,
                "member_address": _member_address(proc),
                "metrics_address": proc.info.get("metrics_address", ""),
                "pid": proc.pid,
                "log": str(proc.log_path),
                "args": proc.args,
                "exec_prefix": proc.exec_prefix,
                "dir": str(proc.workdir),
            }
            for proc, meta in started
        ],
    }
    consoles = [proc.info["console_url"] for proc, _ in started if proc.info.get("console_url")]
    state["console_url"] = consoles[0] if consoles else ""
    if topo.rocketmq_proxies:
        state["rocketmq_endpoints"] = rocketmq_endpoints  # what official RocketMQ 5 clients dial
    if etcd is not None:
        state["processes"][:0] = etcd_rows  # first up, last down
        state["etcd_endpoints"] = etcd.endpoints
    _save_state(directory, state)
    for proc, _ in started:
        proc.detach()  # they outlive this command; cluster.json has their pids
    if etcd is not None:
        etcd.detach()
    return state


def _start_proxies(
    topo: Topology,
    pki: LocalPki | None,
    namesrv: list[str],
    start: Callable[[str, list[str], dict[str, Any], str], TailraceProcess],
) -> list[str]:
    """Start the topology's `tailrace proxy` processes (on the first
    nameserver's host) once the brokers are registered; their v2 endpoints,
    also written into the client profile."""
    endpoints: list[str] = []
    host = topo.nameservers[0][1]
    for i in range(1, topo.rocketmq_proxies + 1):
        name = f"proxy-{i}"
        args = [
            "proxy",
            *("--set", f"proxy.namesrv={','.join(namesrv)}"),
            *("--set", f"proxy.name={name}"),
            *("--set", f"proxy.cluster={json.dumps(topo.cluster)}"),
        ]
        if pki is not None:
            args += pki.proxy_flags(name, [topo.hosts[host].listen_host], namesrv)
        proc = start(name, args, {"role": "proxy", "group": None, "broker_id": None}, host)
        endpoints.append(str(proc.info.get("endpoint") or proc.address))
    if pki is not None and endpoints:
        pki.write_profile(namesrv, endpoints)
    return endpoints


def _member_address(proc: TailraceProcess) -> str:
    """Where members reach a process (its members' port; the same port without TLS)."""
    return str(proc.info.get("member_address") or proc.address)


def _secret_config(directory: Path, topo: Topology) -> Path:
    """An --insecure cluster's replication secret, in an owner-only config
    file rather than on command lines."""
    secret = topo.secret or secrets.token_urlsafe(24)
    path = directory / "insecure-replication.toml"
    atomic_write(path, f"[replication]\nsecret = {json.dumps(secret)}\n".encode(), mode=0o600)
    return path


def _wait_registered(
    nameservers: list[str], topo: Topology, profile: Path | None, timeout_s: float = 30.0
) -> None:
    from consumer.profile import Profile
    from consumer.routing import NameserverRoutes

    expected = sum(1 + g.slaves for g in topo.groups)
    routes = NameserverRoutes(nameservers, security=Profile.resolve(profile).security())
    tty = sys.stderr.isatty()

    def registered() -> bool:
        try:
            n = sum(len(g.brokers) for c in routes.clusters().clusters for g in c.groups)
        except TailraceError:
            n = 0
        if tty:  # progress on a terminal only
            sys.stderr.write(f"\rwaiting for brokers to register: {n}/{expected}   ")
            sys.stderr.write("\n" if n == expected else "")
            sys.stderr.flush()
        return n == expected

    try:
        poll_until(registered, timeout_s, f"all {expected} brokers to register", every_s=0.1)
    finally:
        routes.close()


def down(directory: Path, deadline_s: float = 20.0) -> list[str]:
    state = read_state(directory)
    if state is None:
        return []
    stopped = []
    procs = list(reversed(state["processes"]))
    for p in procs:
        if _alive(p["pid"]):
            os.kill(p["pid"], signal.SIGTERM)
    end = time.monotonic() + deadline_s
    killed = []
    for p in procs:
        while _alive(p["pid"]) and time.monotonic() < end:
            _reap(p["pid"])
            time.sleep(0.05)
        if _alive(p["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p["pid"], signal.SIGKILL)
            killed.append(p)
        stopped.append(p["name"])

    def gone() -> bool:  # SIGKILL is not instant: `down` returns once nothing is left
        return not any(_alive(p["pid"]) for p in killed)

    try:
        poll_until(gone, 10, "SIGKILLed processes exiting", every_s=0.05)
    except WaitTimeout as exc:
        left = [p["name"] for p in killed if _alive(p["pid"])]
        raise TailraceError(f"cluster down: {', '.join(left)} still running after SIGKILL") from exc
    (directory / STATE).unlink()
    reap_detached()  # this process's own handles of them, if it started them
    return stopped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(directory: Path) -> dict[str, Any]:
    from consumer import Admin

    state = read_state(directory)
    if state is None:
        raise TailraceError(f"no cluster in {directory} (tailrace cluster up first)")
    out = []
    for p in state["processes"]:
        row: dict[str, Any] = {k: p[k] for k in ("name", "role", "group", "broker_id", "address", "pid")}
        row["healthy"] = False
        if _alive(p["pid"]) and p["role"] not in ("nameserver", "etcd", "proxy"):
            try:
                with Admin(p["address"], timeout_s=2.0, profile=state_profile(state)) as a:
                    st = a.status()
                d = st["details"]
                rep = d.get("replication", {})
                fo = d.get("failover", {})
                row.update(
                    healthy=True,
                    role=st["role"],  # the current role: a failover changes it
                    epoch=fo.get("epoch", 0),
                    max_offset=st["max_offset"],
                    lag_bytes=rep.get("lag_bytes"),
                    in_sync=rep.get("in_sync"),
                    redirects=d.get("redirect", {}).get("reasons"),
                )
            except TailraceError:
                pass
        elif p["role"] in ("nameserver", "etcd", "proxy"):
            row["healthy"] = _alive(p["pid"])
        out.append(row)
    result: dict[str, Any] = {"processes": out}
    rows = {r["name"]: r for r in out}
    for p in state["processes"]:  # every controller's part; the leader's view of the groups
        if not (p.get("controller") and _alive(p["pid"])):
            continue
        st = controller_status(p["address"], state_profile(state))
        part = st.get("controller", {})
        rows[p["name"]]["controller"] = "leader" if part.get("leading") else "standby"
        if part.get("leading") or "controller" not in result:
            result["controller"] = st.get("groups", st)
        if part.get("leading"):
            result["controller_leader"] = p["name"]
    if any(p.get("controller") for p in state["processes"]):
        result.setdefault("controller_leader", None)
    return result


def state_profile(state: dict[str, Any]) -> Path | None:
    """The client profile of a cluster's state (None: an --insecure cluster)."""
    return Path(state["profile"]) if state.get("profile") else None


def controller_status(address: str, profile: Path | None = None) -> dict[str, Any]:
    """The failover controller's view per group (epoch, master, in-sync set, why)."""
    import grpc

    from consumer.channels import open_channel
    from consumer.profile import Profile
    from core.pb.tailrace.v1 import nameserver_pb2, nameserver_pb2_grpc

    with open_channel(address, Profile.resolve(profile).security()) as ch:
        try:
            stub = nameserver_pb2_grpc.NameServerStub(ch)  # type: ignore[no-untyped-call]
            reply = stub.ControllerStatus(nameserver_pb2.ControllerStatusRequest(), timeout=2)
        except grpc.RpcError as exc:
            return {"error": str(exc.code())}
    return dict(json.loads(reply.json))


def _find(directory: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cluster state, the named process's entry in it)."""
    state = read_state(directory)
    if state is None:
        raise TailraceError(f"no cluster in {directory}")
    for p in state["processes"]:
        if p["name"] == name:
            return state, p
    raise TailraceError(f"no process {name!r} in this cluster")


def signal_process(directory: Path, name: str, sig: signal.Signals) -> None:
    _, p = _find(directory, name)
    if _alive(p["pid"]):
        os.kill(p["pid"], sig)


def start_process(directory: Path, name: str) -> None:
    state, p = _find(directory, name)
    if _alive(p["pid"]):
        raise TailraceError(f"{name} is running (pid {p['pid']})")
    if p["role"] == "etcd":
        p["pid"] = restart_member(p)
        _save_state(directory, state)
        return
    args = list(p["args"])
    if "--listen" in args:  # keep its address: routes and clients know it
        args[args.index("--listen") + 1] = p["address"]
    if p.get("member_address") and p["member_address"] != p["address"]:  # and its members' port
        args += ["--set", f"server.member_listen={p['member_address']}"]
    proc = TailraceProcess(name, args, Path(p["dir"]), p["exec_prefix"]).start()
    p["pid"] = proc.pid
    _save_state(directory, state)
    proc.detach()
