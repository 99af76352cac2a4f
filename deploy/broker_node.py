"""One broker, wired: the core with its roles, the gRPC server with the role
guard, the nameserver registration and the controller link.

`tailrace broker` (deploy/broker_main.py) runs one per process; the
component tests run several in one process, each on its own port 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.access import LeaderGuard
from core.broker.admin_service import BrokerAdminService
from core.broker.controller_link import ControllerLink
from core.broker.core import BrokerCore
from core.broker.failover import FailoverMember
from core.broker.role import BrokerRole, LeaderOps
from core.broker.service import BrokerService
from core.broker_config import BrokerConfig, parse_address
from core.epochs import EpochFile
from core.grpc_server import build_server, set_serving
from core.offsets import ConsumerOffsets
from core.pb.tailrace.v1 import broker_pb2_grpc, replication_pb2_grpc
from core.registration import Registrar
from core.security.identity import Kind, Member
from core.security.serving import ProcessSecurity
from core.store import MessageStore
from master.leader import LeaderRole
from master.replication_service import ReplicationService
from slave.follower import FollowerRole

log = logging.getLogger(__name__)
REQUEST_SLACK = 64 * 1024  # a request's framing beyond its messages' bytes


class Roles:
    """The role objects a broker core switches between."""

    def leader(self, core: BrokerCore, epoch: int) -> LeaderOps:
        return LeaderRole(core, epoch)

    def follower(
        self, core: BrokerCore, master_address: str, member_address: str = "", master_node: int | None = None
    ) -> BrokerRole:
        return FollowerRole(core, master_address, member_address, master_node)


class BrokerNode:
    """Opens the store, builds the core and serves it. `start()` listens and
    begins following or leading; `stop()` ends it in order (registration,
    in-flight calls, held pulls, the store)."""

    def __init__(self, cfg: BrokerConfig) -> None:
        self.cfg = cfg
        b = cfg.broker
        self.host, _ = parse_address(b.listen, "broker.listen")
        member_listen = cfg.server.member_listen_for(b.listen)
        self.security = ProcessSecurity(
            Member(b.cluster, Kind.BROKER, b.broker_name, b.broker_id),
            cfg.tls,
            cfg.auth,
            insecure=cfg.server.insecure,
            drills=cfg.server.enable_drills,
        )
        self.security.check_exposure(
            [
                ("broker.listen", self.host),
                ("server.member_listen", member_listen.rpartition(":")[0]),
                ("server.metrics_listen", cfg.server.metrics_listen.rpartition(":")[0]),
            ]
        )
        b.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        b.data_dir.chmod(0o700)  # an existing one too: offsets, epochs and messages are the owner's
        self.store = MessageStore(b.data_dir, cfg.store)
        try:
            history = self.store.log_history()  # rebuilds a damaged or lost side file
            offsets = ConsumerOffsets(b.data_dir, history)
            epochs = EpochFile(b.data_dir, self.store.commitlog.max_offset, history)
            self.core = BrokerCore(cfg, self.store, offsets, epochs, Roles())
            self.service = BrokerService(self.core)
            guard = LeaderGuard(lambda: self.core.role.is_leader, self.service.refuse)
            self.server, self.health = build_server(
                cfg.server.max_workers,
                cfg.server.max_concurrent_rpcs,
                cfg.server.max_message_bytes,
                [self.security.guard, guard],
                # what a client may send: a batch (and a little framing); refused
                # by gRPC above it, and a single send above a message, before decoding
                max_receive_bytes=cfg.store.max_batch_bytes + REQUEST_SLACK,
                request_limits={
                    "/tailrace.v1.Broker/Send": cfg.store.max_message_bytes + REQUEST_SLACK,
                    "/tailrace.v1.Broker/SendBatch": cfg.store.max_batch_bytes + REQUEST_SLACK,
                    "/tailrace.v1.Broker/SendBack": cfg.store.max_message_bytes + REQUEST_SLACK,
                },
            )
            broker_pb2_grpc.add_BrokerServicer_to_server(self.service, self.server)
            broker_pb2_grpc.add_BrokerAdminServicer_to_server(BrokerAdminService(self.core), self.server)
            self.replication = ReplicationService(self.core)
            replication_pb2_grpc.add_ReplicationServicer_to_server(self.replication, self.server)
            port, member_port = self.security.listen(self.server, b.listen, member_listen, "broker.listen")
        except BaseException:
            self.store.close()
            raise
        self.address = self.core.address = f"{self.host}:{port}"
        mhost = member_listen.rpartition(":")[0]
        self.member_address = self.core.member_address = f"{mhost}:{member_port}"
        self.core.channel_to = self.security.channel_to
        self.core.member_tls = self.security.tls is not None
        self.core.may_create_topic = self.security.may_create_topic
        self.failover = FailoverMember(self.core)
        self.registrar: Registrar | None = None
        self.link: ControllerLink | None = None
        self.metrics_address = ""

    def start(self) -> BrokerNode:
        cfg, b = self.cfg, self.cfg.broker
        self.server.start()
        self.core.start()
        if cfg.server.metrics_listen:
            mhost, mport = parse_address(cfg.server.metrics_listen, "server.metrics_listen")
            port = self.core.metrics.serve(mhost, mport, self.security.metrics_tls)
            self.metrics_address = f"{mhost}:{port}"
        set_serving(self.health, True)
        log.info(
            "serving %s as %s id %d on %s%s",
            b.broker_name,
            self.core.role.name,
            b.broker_id,
            self.address,
            f" (the controllers at {b.controller} decide the role)" if b.controller else "",
        )
        if b.nameservers:
            self.registrar = Registrar(
                b.nameservers, b.heartbeat_ms, self.core.registration, self.security.channel_to
            )
            self.core.on_topics_change = self.registrar.poke  # routes list a new topic at once
        if b.controller:
            self.link = ControllerLink(
                b.controllers, b.controller_heartbeat_ms, self.failover, self.security.channel_to
            )
            self.core.controller_view = self.link.status
        if self.registrar is not None or self.link is not None:
            self.core.on_role_change = _announcer(self.registrar, self.link)
        if self.link is not None:
            self.link.start()
        if self.registrar is not None:
            self.registrar.start()
        return self

    def stop(self) -> None:
        """Stop taking requests, finish calls in flight, release held pulls,
        retire the role, close the store (flush, checkpoint, clean marker)."""
        try:
            if self.link is not None:
                self.link.close()
            if self.registrar is not None:
                self.registrar.close(unregister=True)
            set_serving(self.health, False)
            stopped = self.server.stop(self.cfg.server.grace_ms / 1000)
            self.core.close()  # held pulls return now instead of at their deadline
            stopped.wait()
        finally:
            self.store.close()


def _announcer(registrar: Registrar | None, link: ControllerLink | None) -> Callable[[], None]:
    """After a role change: tell the nameservers and the controller at once
    (clients find a new master by its registration, not after a heartbeat)."""

    def announce() -> None:
        if link is not None:
            link.poke()
        if registrar is not None:
            threading.Thread(target=registrar.register_once, name="announce", daemon=True).start()

    return announce
