"""A broker's side of failover: what it tells the controller, and what it
does with the controller's directive.

- **promotion** (the directive names this node in a newer epoch): the core
  stops following, marks the epoch's start in the log and leads; writes need
  the lease the controller renews with every heartbeat sent as the leader of
  the current epoch.
- **demotion** (a newer epoch led by another): the leader is fenced (lease
  revoked, streams it served end) and the broker follows the new master; the
  replication handshake cuts its divergent tail (core/epochs.py), undoing
  consumer-offset commits in that tail first.
- **a new master address** while following: follow it.

Plain logic over the core; `core/broker/controller_link.py` runs the loop.
"""

from __future__ import annotations

from typing import cast

from core.broker.core import BrokerCore
from core.broker.role import LeaderOps
from core.pb.tailrace.v1 import nameserver_pb2 as ns_pb
from core.roles import NO_MASTER, Directive, Role


class FailoverMember:
    def __init__(self, core: BrokerCore) -> None:
        self.core = core
        self.directed = False  # heard from the controller at least once

    def controller_heartbeat(self) -> tuple[ns_pb.ControllerHeartbeatRequest, int]:
        """What this broker tells the controller, and the in-sync proposal's generation."""
        core = self.core
        b = core.config.broker
        with core._role_lock:
            gen, proposal = 0, frozenset[int]()
            role = core.role
            if role.is_leader:
                name = Role.MASTER
                gen, proposal = cast(LeaderOps, role).propose()
            elif b.role is Role.MASTER and not self.directed and not core.epochs.history:
                name = Role.INITIAL_MASTER
            else:
                name = Role.SLAVE
            req = ns_pb.ControllerHeartbeatRequest(
                cluster=b.cluster,
                group=b.broker_name,
                node_id=core.node_id,
                address=core.address,
                member_address=core.member_address,
                epoch=core.epoch,
                role=str(name),
                max_offset=core.store.commitlog.max_offset,
                in_sync=sorted(proposal),
                priority=b.election_priority,
            )
        return req, gen

    def on_directive(
        self, d: Directive, sent_at: float, request: ns_pb.ControllerHeartbeatRequest, gen: int
    ) -> None:
        if d.master_id == NO_MASTER:
            return
        core = self.core
        changed = False
        with core._role_lock:
            if d.epoch < core.elected_epoch:  # from a controller behind another: never obeyed
                return
            self.directed = True
            core.elected_epoch = d.epoch
            if d.master_id == core.node_id:
                if core.epoch < d.epoch:
                    core.promote(d.epoch)
                    changed = True
                role = core.role
                if (
                    role.is_leader
                    and core.epoch == d.epoch
                    and request.role == Role.MASTER
                    and request.epoch == d.epoch
                ):
                    cast(LeaderOps, role).renewed(sent_at, d, gen)
            elif core.role.is_leader:  # demoted: follow the new master (or nobody, yet)
                core.follow(d.master_address, d.master_member_address, d.master_id)
                changed = True
            elif d.master_address and (
                core.role.master_address,
                core.role.master_member_address,
                core.role.master_node,
            ) != (d.master_address, d.master_member_address, d.master_id):
                core.follow(d.master_address, d.master_member_address, d.master_id)
        if changed:
            core.on_role_change()
