"""The nameserver's `[controller]` section and the wiring of a controller over
its state store: the file (one controller) or etcd (several, one leading)."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.clock import now_ms
from core.config import require
from core.errors import ConfigError
from core.security.identity import etcd_dns
from core.security.tls import TlsSection
from nameserver.controller import Controller, LeaderInfo

if TYPE_CHECKING:
    from nameserver.campaign import Campaign

log = logging.getLogger(__name__)
MAX_ENDPOINTS = 16


@dataclass(frozen=True, slots=True)
class ControllerSection:
    enabled: bool = field(
        default=False,
        metadata={
            "doc": "run the failover controller here (file store: one per cluster; etcd: on every "
            "nameserver, one leads); brokers name them in broker.controller"
        },
    )
    store: str = field(default="file", metadata={"doc": "file (controller.json in data_dir) or etcd"})
    data_dir: Path = field(
        default=Path("./controller"),
        metadata={"doc": "file store: where epochs are kept (controller.json)"},
    )
    lease_ms: int = field(
        default=4000,
        metadata={"doc": "master lease; a master silent this long is replaced (keep >= 3 broker heartbeats)"},
    )
    unclean_election: bool = field(
        default=False,
        metadata={
            "doc": "elect an out-of-sync slave when no in-sync one is alive (may lose acknowledged writes)"
        },
    )
    etcd_endpoints: str = field(
        default="", metadata={"doc": "etcd store: comma-separated http(s)://HOST:PORT of the etcd members"}
    )
    etcd_prefix: str = field(
        default="", metadata={"doc": "etcd store: key prefix (default /tailrace/<cluster>/controller/)"}
    )
    etcd_lease_ms: int = field(
        default=2000,
        metadata={
            "doc": "etcd store: the leader key's lease (whole seconds, at most lease_ms/2): how long a "
            "dead leader keeps standbys waiting"
        },
    )
    etcd_timeout_ms: int = field(default=1000, metadata={"doc": "etcd store: deadline of one call to etcd"})
    etcd_tls: bool = field(
        default=False,
        metadata={
            "doc": "etcd store: https with [tls]'s CA and this nameserver's certificate; etcd's must "
            "name etcd.<cluster>.tailrace.member"
        },
    )
    takeover_margin_ms: int = field(
        default=-1,
        metadata={
            "doc": "a new leader waits lease_ms plus this before replacing a master (-1: lease_ms/4 with "
            "etcd, 0 with the file)"
        },
    )

    def validate(self, prefix: str = "controller") -> None:
        require(self.lease_ms >= 100, f"{prefix}.lease_ms", "must be at least 100")
        require(self.store in ("file", "etcd"), f"{prefix}.store", "must be file or etcd")
        require(self.takeover_margin_ms >= -1, f"{prefix}.takeover_margin_ms", "must be >= 0 (or -1)")
        require(self.etcd_timeout_ms >= 50, f"{prefix}.etcd_timeout_ms", "must be at least 50")
        if self.store != "etcd":
            return
        endpoints = self.endpoints()
        require(bool(endpoints), f"{prefix}.etcd_endpoints", "the etcd store needs at least one endpoint")
        require(len(endpoints) <= MAX_ENDPOINTS, f"{prefix}.etcd_endpoints", f"at most {MAX_ENDPOINTS}")
        for e in endpoints:
            scheme, sep, rest = e.partition("://")
            require(
                bool(sep) and scheme in ("http", "https") and ":" in rest and "/" not in rest,
                f"{prefix}.etcd_endpoints",
                f"{e!r} must be http(s)://HOST:PORT",
            )
            if self.etcd_tls:
                require(scheme == "https", f"{prefix}.etcd_endpoints", f"{e!r}: etcd_tls needs https")
        require(
            self.etcd_lease_ms >= 1000 and self.etcd_lease_ms % 1000 == 0,
            f"{prefix}.etcd_lease_ms",
            "must be whole seconds (etcd leases count seconds), at least 1000",
        )
        require(
            2 * self.etcd_lease_ms <= self.lease_ms,
            f"{prefix}.etcd_lease_ms",
            "must be at most half of lease_ms, or a dead leader costs the masters their leases",
        )
        if self.etcd_prefix:
            p = self.etcd_prefix
            require(
                p.startswith("/") and p.endswith("/"), f"{prefix}.etcd_prefix", "must start and end with /"
            )

    def endpoints(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]

    def margin_ms(self) -> int:
        if self.takeover_margin_ms >= 0:
            return self.takeover_margin_ms
        return self.lease_ms // 4 if self.store == "etcd" else 0


@dataclass
class ControllerRuntime:
    """A running controller and what drives it (a campaign thread with etcd)."""

    controller: Controller
    campaign: Campaign | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Elections on time even when no broker calls; the campaign with etcd."""
        ctl = self.controller

        def tick() -> None:
            while not self.stop.wait(ctl.lease_ms / 8000):
                try:
                    ctl.tick(now_ms())
                except Exception:  # e.g. the store cannot be written: try again
                    log.exception("controller tick failed")

        self.threads.append(threading.Thread(target=tick, name="controller", daemon=True))
        if self.campaign is not None:
            self.threads.append(
                threading.Thread(target=self.campaign.run, args=(self.stop,), name="campaign", daemon=True)
            )
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Stop; a leader steps down and revokes its etcd lease (a standby leads at once)."""
        self.stop.set()
        for t in self.threads:
            t.join(5)
        if self.campaign is not None:
            self.campaign.resign()


def etcd_ssl_context(tls: TlsSection) -> ssl.SSLContext:
    """The nameserver's own certificate, trusted by etcd's CA (the cluster's)."""
    if not tls.enabled:
        raise ConfigError("controller.etcd_tls", "needs [tls] ca_file, cert_file and key_file")
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def build_controller(
    cfg: ControllerSection, cluster: str, me: LeaderInfo, tls: TlsSection
) -> ControllerRuntime:
    """The controller, leading at once over its file, or campaigning in etcd
    (`start()` the runtime once the server is up)."""
    if cfg.store == "file":
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg.data_dir.chmod(0o700)
        ctl = Controller(cfg.data_dir, cfg.lease_ms, cfg.unclean_election, now_ms(), me=me)
        return ControllerRuntime(ctl)
    from core.etcd.client import EtcdClient
    from nameserver.campaign import Campaign
    from nameserver.etcd_store import EtcdStore, default_prefix

    ctx = etcd_ssl_context(tls) if cfg.etcd_tls else None
    name = etcd_dns(cluster) if cfg.etcd_tls else ""  # etcd's certificate must name it
    kv = EtcdClient(cfg.endpoints(), timeout_s=cfg.etcd_timeout_ms / 1000, ssl_context=ctx, server_name=name)
    store = EtcdStore(kv, cfg.etcd_prefix or default_prefix(cluster))
    ctl = Controller(
        store,
        cfg.lease_ms,
        cfg.unclean_election,
        now_ms(),
        takeover_margin_ms=cfg.margin_ms(),
        me=me,
        campaigns=True,
    )
    return ControllerRuntime(ctl, Campaign(kv, store, ctl, cfg.etcd_lease_ms // 1000))
