"""Cluster topologies: the TOML files `tailrace cluster up` starts.

A topology names nameservers and broker groups (a master and N slaves
each), with per-group `set` overrides and an optional `exec_prefix` per
host (e.g. `ip netns exec NAME`, `ssh HOST`); shipped ones live in
deploy/topologies/.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

TOPOLOGIES = Path(__file__).resolve().parent / "topologies"


@dataclass
class HostSpec:
    """Where a process runs: a command prefix (e.g. `ip netns exec ns1`,
    `ssh host`) and the address it listens on there."""

    exec_prefix: list[str] = field(default_factory=list)
    listen_host: str = "127.0.0.1"


@dataclass
class GroupSpec:
    name: str
    replication: str = "async"
    slaves: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    host: str = "local"
    slave_hosts: list[str] = field(default_factory=list)


@dataclass
class Topology:
    cluster: str
    secret: str
    segment_bytes: int
    nameservers: list[tuple[str, str]]  # (name, host)
    groups: list[GroupSpec]
    hosts: dict[str, HostSpec]
    failover: bool = False  # the first nameserver runs the controller; brokers follow it
    drills: bool = False  # serve the drill-only RPCs (Isolate): `tailrace drill` turns it on
    lease_ms: int = 4000
    controller_heartbeat_ms: int = 1000
    heartbeat_ms: int = 1000  # registration with the nameservers


def load_topology(path: Path) -> Topology:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("--topology", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--topology", f"{path} is not valid TOML: {exc}") from exc
    c = data.get("cluster", {})
    hosts = {"local": HostSpec()}
    for hname, h in data.get("hosts", {}).items():
        hosts[hname] = HostSpec(list(h.get("exec_prefix", [])), str(h.get("listen_host", "127.0.0.1")))
    nameservers = [(str(n["name"]), str(n.get("host", "local"))) for n in data.get("nameserver", [])]
    if not nameservers:
        raise ConfigError("nameserver", f"{path.name} defines no [[nameserver]]")
    groups = []
    for g in data.get("group", []):
        if "name" not in g:
            raise ConfigError("group.name", f"{path.name}: every [[group]] needs a name")
        repl = g.get("replication", "async")
        if repl not in ("async", "sync"):
            raise ConfigError(f"group.{g['name']}.replication", f"must be async or sync, got {repl!r}")
        slaves = g.get("slaves", 0)
        if not isinstance(slaves, int) or not 0 <= slaves <= 16:
            raise ConfigError(f"group.{g['name']}.slaves", "must be an integer in 0..16")
        spec = GroupSpec(
            str(g["name"]), repl, slaves, dict(g.get("set", {})), str(g.get("host", "local")),
            [str(h) for h in g.get("slave_hosts", [])],
        )  # fmt: skip
        groups.append(spec)
    if not groups:
        raise ConfigError("group", f"{path.name} defines no [[group]]")
    topo = Topology(
        cluster=str(c.get("name", "DefaultCluster")),
        secret=os.environ.get("TAILRACE_CLUSTER_SECRET") or str(c.get("secret", "")),
        segment_bytes=int(c.get("segment_bytes", 64 * 1024 * 1024)),
        nameservers=nameservers,
        groups=groups,
        hosts=hosts,
        failover=bool(c.get("failover", False)),
        lease_ms=int(c.get("lease_ms", 4000)),
        controller_heartbeat_ms=int(c.get("controller_heartbeat_ms", 1000)),
        heartbeat_ms=int(c.get("heartbeat_ms", 1000)),
    )
    if topo.failover and not 0 < 4 * topo.controller_heartbeat_ms <= topo.lease_ms:
        raise ConfigError("cluster.lease_ms", "must be at least 4 controller heartbeats (fencing margin)")
    for pname, host in [*nameservers] + [(g.name, h) for g in groups for h in [g.host, *g.slave_hosts]]:
        if host not in hosts:
            raise ConfigError(f"{pname}.host", f"no [hosts.{host}] in {path.name}")
    return topo


def resolve_topology(name: str | None) -> Path:
    if name is None:
        return TOPOLOGIES / "local-1m-2s.toml"
    p = Path(name)
    if p.exists():
        return p
    shipped = TOPOLOGIES / (name if name.endswith(".toml") else f"{name}.toml")
    if shipped.exists():
        return shipped
    raise ConfigError(
        "--topology",
        f"no topology {name!r} (file or one of {sorted(f.stem for f in TOPOLOGIES.glob('*.toml'))})",
    )
