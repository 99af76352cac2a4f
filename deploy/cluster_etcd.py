"""The etcd members of a `controller_store = "etcd"` cluster (local-ha):
started by `tailrace cluster up` before the nameservers, recorded in
cluster.json (role `etcd`, their command lines) so that `down`, `kill`,
`stop`, `start` and `status` treat them like the other processes.

A secure cluster's etcd serves TLS on client and peer ports and requires a
certificate from the cluster's CA (one `etcd` certificate for every member,
named `etcd.<cluster>.tailrace.member`; only it may join as a peer);
nameservers reach it with their own member certificates
(`controller.etcd_tls`) and demand that name, so no other certificate of the
CA can pose as etcd. As a client, any certificate of the cluster's CA is
accepted: etcd's own users and roles are not used (a known limit: a
broker's certificate could write the controller's keys).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from core.security.identity import etcd_dns
from deploy.etcd_cluster import EtcdTls, LocalEtcd
from deploy.harness import keep_detached
from deploy.pki import LocalPki
from deploy.topology import Topology


def start_etcd(
    directory: Path, topo: Topology, pki: LocalPki | None
) -> tuple[LocalEtcd, list[dict[str, Any]]]:
    """Start the topology's etcd members; their cluster.json rows."""
    tls = None
    host = topo.hosts["local"].listen_host
    if pki is not None:
        dns = [etcd_dns(topo.cluster), "localhost"]
        issued = pki.ca.issue("etcd", [], dns, [host, "127.0.0.1"], pki.tls_dir, "etcd")
        tls = EtcdTls(pki.ca_file, issued.cert_file, issued.key_file, peer_cn="etcd")
    etcd = LocalEtcd(directory / "etcd", topo.etcd_members, host=host, tls=tls)
    etcd.start()
    rows = []
    for i, m in enumerate(etcd.members):
        rows.append(
            {
                "name": f"etcd-{i + 1}",
                "role": "etcd",
                "group": None,
                "broker_id": None,
                "address": m.client_url.partition("://")[2],
                "member_address": m.peer_url.partition("://")[2],
                "metrics_address": "",
                "pid": m.pid,
                "log": str(m.log_path),
                "args": etcd.args(i),
                "exec_prefix": [],
                "dir": str(m.data_dir),
                "url": m.client_url,
            }
        )
    return etcd, rows


def controller_flags(topo: Topology, endpoints: list[str], secure: bool) -> list[str]:
    """A nameserver's `--set` flags for a controller over etcd."""
    return [
        *("--set", 'controller.store="etcd"'),
        *("--set", f'controller.etcd_endpoints="{",".join(endpoints)}"'),
        *("--set", f"controller.etcd_lease_ms={topo.etcd_lease_ms}"),
        *("--set", f"controller.etcd_tls={'true' if secure else 'false'}"),
    ]


def restart_member(p: dict[str, Any]) -> int:
    """Start a recorded etcd member again on its data dir and ports; its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with open(p["log"], "ab") as out:
        proc = subprocess.Popen(
            p["args"], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    keep_detached(proc)  # `cluster down` stops it by pid and reaps the handle
    return proc.pid
