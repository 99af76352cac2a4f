"""`tailrace cluster migrate-controller`: move a running cluster's failover
controller from its file to etcd, keeping every epoch.

Steps: stop the controller's nameserver (SIGTERM: its state is frozen; the
masters keep writing on their leases), copy its `controller.json` into etcd
(nameserver/migrate.py: all or nothing, refused if etcd disagrees), start it
again on etcd, at the same addresses. It takes the leader key, re-reads the
epochs and renews the masters when they heartbeat: the same masters, the same
epochs. If the nameserver is down for longer than 3/4 of a master lease,
the masters refuse writes for that while (MASTER_LEASE_EXPIRED) and resume.
A copy that fails restarts the nameserver on its file, unchanged.

Only the one controller moves: to run a standby controller on the other
nameservers too, restart them with `[controller] store = "etcd"` and list them
in the brokers' `broker.controller` (a rolling restart).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from core.errors import ConfigError, TailraceError
from deploy import cluster
from deploy.waits import poll_until

ETCD_LEASE_MS = 2000


def _flag(args: list[str], key: str) -> str | None:
    """The value of `--set key=VALUE` in a command line (TOML strings unquoted)."""
    for i, a in enumerate(args[:-1]):
        if a == "--set" and args[i + 1].startswith(key + "="):
            value = args[i + 1].partition("=")[2]
            return str(json.loads(value)) if value.startswith('"') else value
    return None


def migrate_controller(directory: Path, endpoints: list[str]) -> dict[str, Any]:
    from core.etcd import EtcdClient, EtcdError
    from core.security.identity import etcd_dns
    from deploy.cluster_etcd import controller_flags
    from deploy.topology import load_topology
    from nameserver.controller_store import FileStore
    from nameserver.etcd_store import EtcdStore, default_prefix
    from nameserver.migrate import migrate

    state = cluster.read_state(directory)
    if state is None:
        raise TailraceError(f"no cluster in {directory}")
    ctl = [p for p in state["processes"] if p.get("controller")]
    if len(ctl) != 1 or _flag(ctl[0]["args"], "controller.store") == "etcd":
        raise TailraceError("migrate-controller moves one file controller; this cluster has none")
    p = ctl[0]
    data_dir = _flag(p["args"], "controller.data_dir")
    if data_dir is None:
        raise TailraceError(f"{p['name']} has no controller.data_dir on its command line")
    topo = load_topology(Path(state["topology"]))
    topo.etcd_lease_ms = ETCD_LEASE_MS
    lease_ms = int(_flag(p["args"], "controller.lease_ms") or 4000)
    if lease_ms < 2 * ETCD_LEASE_MS:
        raise ConfigError("controller.lease_ms", f"must be at least {2 * ETCD_LEASE_MS} to run over etcd")
    ctx = None
    cert, key = _flag(p["args"], "tls.cert_file"), _flag(p["args"], "tls.key_file")
    if state.get("secure") and cert and key:
        ctx = ssl.create_default_context(cafile=_flag(p["args"], "tls.ca_file"))
        ctx.load_cert_chain(cert, key)
    name = etcd_dns(topo.cluster) if ctx is not None else ""
    kv = EtcdClient(endpoints, timeout_s=5.0, ssl_context=ctx, server_name=name)
    try:
        store = EtcdStore(kv, default_prefix(topo.cluster))
        try:
            kv.get(store.leader_key)  # etcd answers before anything stops
        except EtcdError as exc:
            raise TailraceError(f"etcd at {', '.join(endpoints)} does not answer: {exc}") from exc
        if cluster._alive(p["pid"]):
            os.kill(p["pid"], signal.SIGTERM)
            poll_until(lambda: not cluster._alive(p["pid"]), 20, f"{p['name']} stopping", every_s=0.05)
        try:
            groups = {n: rec for n, (rec, _) in FileStore(Path(data_dir), own=False).load().items()}
            report = migrate(groups, store)
        except BaseException:
            cluster.start_process(directory, p["name"])  # as it was, whatever went wrong
            raise
    finally:
        kv.close()
    state = cluster.read_state(directory)
    assert state is not None
    for q in state["processes"]:
        if q["name"] == p["name"]:
            q["args"] = [*q["args"], *controller_flags(topo, endpoints, ctx is not None)]
    state["etcd_endpoints"] = endpoints
    cluster._save_state(directory, state)
    cluster.start_process(directory, p["name"])
    return {
        "nameserver": p["name"],
        "copied": report.copied,
        "already": report.already,
        "epochs": report.epochs,
    }
