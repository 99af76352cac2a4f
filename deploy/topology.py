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
    failover: bool = False  # the first nameserver runs the controller (etcd: every one); brokers follow it
    drills: bool = False  # serve the drill-only RPCs (Isolate): `tailrace drill` turns it on
    lease_ms: int = 4000
    controller_heartbeat_ms: int = 1000
    heartbeat_ms: int = 1000  # registration with the nameservers
    controller_store: str = "file"  # file (the first nameserver's) or etcd (every nameserver campaigns)
    etcd_members: int = 0  # etcd members the launcher starts (controller_store = "etcd")
    etcd_lease_ms: int = 2000  # the controller leader key's etcd lease
    rocketmq_proxies: int = (
        0  # `tailrace proxy` processes (RocketMQ 5 clients), on the first nameserver's host
    )

    def controllers(self) -> int:
        """How many nameservers run a controller."""
        if not self.failover:
            return 0
        return len(self.nameservers) if self.controller_store == "etcd" else 1


def _table(value: Any, key: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"{path.name}: must be a table")
    return value


def _tables(value: Any, key: str, path: Path) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(key, f"{path.name}: must be [[{key}]] tables")
    return value


def _list(value: Any, key: str, path: Path) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"{path.name}: must be a list")
    return value


def _int(table: dict[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}", f"must be an integer, got {type(value).__name__}")
    return value


def load_topology(path: Path) -> Topology:
    """Read a topology file; ConfigError names what is wrong with it."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("--topology", f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError("--topology", f"{path} is not valid TOML: {str(exc)[:200]}") from exc
    c = _table(data.get("cluster", {}), "cluster", path)
    hosts = {"local": HostSpec()}
    for hname, h in _table(data.get("hosts", {}), "hosts", path).items():
        h = _table(h, f"hosts.{hname}", path)
        prefix = [str(x) for x in _list(h.get("exec_prefix", []), f"hosts.{hname}.exec_prefix", path)]
        hosts[hname] = HostSpec(prefix, str(h.get("listen_host", "127.0.0.1")))
    nameservers = []
    for n in _tables(data.get("nameserver", []), "nameserver", path):
        if "name" not in n:
            raise ConfigError("nameserver.name", f"{path.name}: every [[nameserver]] needs a name")
        nameservers.append((str(n["name"]), str(n.get("host", "local"))))
    if not nameservers:
        raise ConfigError("nameserver", f"{path.name} defines no [[nameserver]]")
    groups = []
    for g in _tables(data.get("group", []), "group", path):
        if "name" not in g:
            raise ConfigError("group.name", f"{path.name}: every [[group]] needs a name")
        repl = g.get("replication", "async")
        if repl not in ("async", "sync"):
            raise ConfigError(f"group.{g['name']}.replication", f"must be async or sync, got {repl!r}")
        slaves = g.get("slaves", 0)
        if isinstance(slaves, bool) or not isinstance(slaves, int) or not 0 <= slaves <= 16:
            raise ConfigError(f"group.{g['name']}.slaves", "must be an integer in 0..16")
        spec = GroupSpec(
            str(g["name"]), repl, slaves, dict(_table(g.get("set", {}), f"group.{g['name']}.set", path)),
            str(g.get("host", "local")),
            [str(h) for h in _list(g.get("slave_hosts", []), f"group.{g['name']}.slave_hosts", path)],
        )  # fmt: skip
        groups.append(spec)
    if not groups:
        raise ConfigError("group", f"{path.name} defines no [[group]]")
    topo = Topology(
        cluster=str(c.get("name", "DefaultCluster")),
        secret=os.environ.get("TAILRACE_CLUSTER_SECRET") or str(c.get("secret", "")),
        segment_bytes=_int(c, "segment_bytes", 64 * 1024 * 1024, "cluster"),
        nameservers=nameservers,
        groups=groups,
        hosts=hosts,
        failover=bool(c.get("failover", False)),
        lease_ms=_int(c, "lease_ms", 4000, "cluster"),
        controller_heartbeat_ms=_int(c, "controller_heartbeat_ms", 1000, "cluster"),
        heartbeat_ms=_int(c, "heartbeat_ms", 1000, "cluster"),
        controller_store=str(c.get("controller_store", "file")),
        etcd_members=_int(c, "etcd_members", 0, "cluster"),
        etcd_lease_ms=_int(c, "etcd_lease_ms", 2000, "cluster"),
        rocketmq_proxies=_int(c, "rocketmq_proxies", 0, "cluster"),
    )
    if not 0 <= topo.rocketmq_proxies <= 16:
        raise ConfigError("cluster.rocketmq_proxies", "must be in 0..16")
    check_timings(topo)
    for pname, host in [*nameservers] + [(g.name, h) for g in groups for h in [g.host, *g.slave_hosts]]:
        if host not in hosts:
            raise ConfigError(f"{pname}.host", f"no [hosts.{host}] in {path.name}")
    return topo


def check_timings(topo: Topology) -> None:
    """The controller's timings fit together (also after a drill tuned them)."""
    if topo.failover and not 0 < 4 * topo.controller_heartbeat_ms <= topo.lease_ms:
        raise ConfigError("cluster.lease_ms", "must be at least 4 controller heartbeats (fencing margin)")
    if topo.controller_store not in ("file", "etcd"):
        raise ConfigError("cluster.controller_store", f"must be file or etcd, not {topo.controller_store!r}")
    if topo.controller_store == "file":
        if topo.etcd_members:
            raise ConfigError("cluster.etcd_members", 'needs controller_store = "etcd"')
        return
    if not topo.failover:
        raise ConfigError("cluster.controller_store", "etcd needs failover = true")
    if not 1 <= topo.etcd_members <= 7:
        raise ConfigError("cluster.etcd_members", 'must be 1..7 with controller_store = "etcd"')
    if topo.etcd_lease_ms % 1000 or not 2000 <= topo.etcd_lease_ms <= topo.lease_ms // 2:
        raise ConfigError(
            "cluster.etcd_lease_ms",
            "must be whole seconds, at least 2000 (etcd's minimum at the launcher's timings) and at "
            "most lease_ms / 2",
        )
    # a dead controller leader is replaced (its etcd lease, etcd's expiry round, a watch) and the
    # master heard (up to two of its heartbeats) before the master fences itself at 3/4 of its lease
    if topo.etcd_lease_ms + 2 * topo.controller_heartbeat_ms + 500 > topo.lease_ms * 3 // 4:
        raise ConfigError(
            "cluster.lease_ms",
            "with etcd, 3/4 of lease_ms must cover etcd_lease_ms + 2 controller heartbeats + 500 ms "
            "(a controller failover must not cost the master its lease)",
        )


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
