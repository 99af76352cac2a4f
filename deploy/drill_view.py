"""`ClusterView`: a drill's handles on a running cluster (deploy/cluster.py's
state file): its processes, the controller that leads among several, the
group as that leader sees it, each broker's role, the etcd members.

With a file store one nameserver runs the controller and always leads; with
etcd (local-ha) every nameserver runs one and the view asks each, using the
one whose role says it leads. A process the drill paused is not asked (its
calls would only time out), and every call has a short deadline: the view
is polled by `poll_until`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import grpc

from consumer.channels import open_channel
from consumer.profile import Profile
from core.errors import TailraceError
from core.etcd import EtcdClient, EtcdError
from core.pb.tailrace.v1 import broker_pb2, broker_pb2_grpc, nameserver_pb2, nameserver_pb2_grpc
from deploy import cluster
from deploy.etcd_cluster import EtcdTls

RPC_S = 1.0  # deadline of one status call


class ClusterView:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        state = cluster.read_state(directory)
        assert state is not None
        self.procs: dict[str, dict[str, Any]] = {p["name"]: p for p in state["processes"]}
        self.controllers = [p["name"] for p in state["processes"] if p.get("controller")]
        if not self.controllers:
            raise TailraceError("drill: the topology has no controller (set failover = true in [cluster])")
        self.nameservers = [p["address"] for p in state["processes"] if p["role"] == "nameserver"]
        self.profile = cluster.state_profile(state)  # the cluster's client profile (TLS, the admin account)
        self.security = Profile.resolve(self.profile).security()
        self.paused: set[str] = set()  # SIGSTOPped by the drill: not asked
        self._channels: dict[str, grpc.Channel] = {}
        self._etcd_ssl = None
        if state.get("secure") and self.etcd_members():
            tls = directory / "tls"
            self._etcd_ssl = EtcdTls(tls / "ca.pem", tls / "etcd.pem", tls / "etcd.key").client_context()

    def refresh(self) -> None:
        state = cluster.read_state(self.directory)
        assert state is not None
        self.procs = {p["name"]: p for p in state["processes"]}

    # -- controllers ---------------------------------------------------------------------

    def _ns_stub(self, name: str) -> nameserver_pb2_grpc.NameServerStub:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = open_channel(self.procs[name]["address"], self.security)
        return nameserver_pb2_grpc.NameServerStub(ch)  # type: ignore[no-untyped-call]

    def controller_status(self, name: str) -> dict[str, Any] | None:
        """Nameserver `name`'s ControllerStatus (None: down, paused or not answering)."""
        if name in self.paused or not self.alive(name):
            return None
        try:
            reply = self._ns_stub(name).ControllerStatus(
                nameserver_pb2.ControllerStatusRequest(), timeout=RPC_S
            )
        except grpc.RpcError:
            return None
        return dict(json.loads(reply.json))

    def controller_role(self, name: str) -> dict[str, Any] | None:
        """Its part: leading, leader, token (None: not answering)."""
        st = self.controller_status(name)
        return dict(st.get("controller", {})) if st is not None else None

    def controller_leader(self, exclude: str = "") -> str | None:
        """The controller whose role says it leads (of those answering; the
        newest token if two think so), None if none does."""
        leading = []
        for n in self.controllers:
            role = self.controller_role(n) if n != exclude else None
            if role is not None and role.get("leading"):
                leading.append((int(role.get("token", 0)), n))
        return max(leading)[1] if leading else None

    def _leader_status(self) -> dict[str, Any]:
        for n in self.controllers:
            st = self.controller_status(n)
            if st is not None and st.get("controller", {}).get("leading"):
                return st
        return {}

    def group_status(self) -> dict[str, Any]:
        """The (one) group as the leading controller sees it; {} if none leads."""
        groups = self._leader_status().get("groups", {})
        return dict(next(iter(groups.values()))) if groups else {}

    def isolate(self, address: str, duration_ms: int) -> None:
        """Cut `address` off at the leading controller (drills' Isolate RPC)."""
        leader = self.controller_leader()
        if leader is None:
            raise TailraceError("drill: no controller leads: nothing to isolate at")
        req = nameserver_pb2.IsolateRequest(address=address, duration_ms=duration_ms)
        self._ns_stub(leader).Isolate(req, timeout=5)

    # -- brokers -------------------------------------------------------------------------

    def brokers(self) -> list[str]:
        return [n for n, p in self.procs.items() if p["role"] in ("master", "slave")]

    def master(self) -> str:
        addr = self.group_status().get("master_address", "")
        for n in self.brokers():
            if self.procs[n]["address"] == addr:
                return n
        raise TailraceError(f"drill: no broker at the master address {addr!r}")

    def epoch(self) -> int:
        return int(self.group_status().get("epoch", 0))

    def role_of(self, name: str) -> str:
        if name in self.paused:
            return "paused"
        with open_channel(self.procs[name]["address"], self.security) as ch:
            try:
                st = broker_pb2_grpc.BrokerStub(ch).Status(  # type: ignore[no-untyped-call]
                    broker_pb2.StatusRequest(), timeout=2
                )
            except grpc.RpcError:
                return "down"
            return str(st.role)

    def all_in_sync(self) -> bool:
        g = self.group_status()
        return bool(g) and len(g.get("in_sync", [])) == len(self.brokers()) - 1 and g.get("status") == "ok"

    # -- etcd ----------------------------------------------------------------------------

    def etcd_members(self) -> list[str]:
        return [n for n, p in self.procs.items() if p["role"] == "etcd"]

    def etcd_member_status(self, name: str) -> tuple[int, int] | None:
        """(member id, leader id) from member `name` alone (None: not answering)."""
        if name in self.paused or not self.alive(name):
            return None
        try:
            with EtcdClient([self.procs[name]["url"]], 0.5, self._etcd_ssl) as c:
                return c.member_status()
        except EtcdError:
            return None

    def etcd_leader(self) -> str | None:
        """The member every answering member names as leader (None: no agreement)."""
        ids: dict[int, str] = {}
        leaders: set[int] = set()
        for n in self.etcd_members():
            st = self.etcd_member_status(n)
            if st is not None:
                ids[st[0]] = n
                leaders.add(st[1])
        return ids.get(next(iter(leaders))) if len(leaders) == 1 else None

    # -- processes -----------------------------------------------------------------------

    def signal(self, name: str, sig: signal.Signals) -> None:
        cluster.signal_process(self.directory, name, sig)
        if sig == signal.SIGSTOP:
            self.paused.add(name)
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.paused.discard(name)

    def alive(self, name: str) -> bool:
        return cluster._alive(int(self.procs[name]["pid"]))

    def start(self, name: str) -> None:
        cluster.start_process(self.directory, name)
        self.refresh()
        ch = self._channels.pop(name, None)  # a new process: a new connection
        if ch is not None:
            ch.close()

    def pids(self, role: str) -> list[int]:
        return [int(p["pid"]) for p in self.procs.values() if p["role"] == role]

    def log_of(self, name: str) -> Path:
        return Path(self.procs[name]["log"])

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
