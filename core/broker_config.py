"""Broker configuration: TOML file, then command-line overrides.

Sections: `[broker]`, `[server]`, `[pull]`, `[store]` (StoreConfig). Every key
has a default and a doc (`tailrace broker --print-config` lists them).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import describe, load_section, require
from core.errors import ConfigError, InvalidArgumentError
from core.retry import DEFAULT_DELAYS, parse_delays
from core.roles import ReplicationMode, Role
from core.security.config import AuthSection
from core.security.tls import TlsSection
from core.store.config import StoreConfig
from core.timer import DEFAULT_MAX_DELAY_MS

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
BROKER_NAME = _NAME  # a broker group's (and a cluster's) name
DAY_MS = 24 * 3600 * 1000
MAX_CONTROLLERS = 16  # broker.controller: a controller per nameserver is a handful, never more


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def parse_address(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"must be HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class BrokerSection:
    cluster: str = field(default="DefaultCluster", metadata=_doc("cluster name"))
    broker_name: str = field(
        default="broker-a", metadata=_doc("broker group name; master and slaves share it")
    )
    broker_id: int = field(
        default=0,
        metadata=_doc("0 = master, >0 = slave; with a controller: this node's stable id in its group, >= 1"),
    )
    role: Role = field(
        default=Role.MASTER,
        metadata=_doc("master or slave; with a controller, only the starting role (the controller decides)"),
    )
    listen: str = field(default="127.0.0.1:10911", metadata=_doc("HOST:PORT to serve on; port 0 picks one"))
    data_dir: Path = field(default=Path("./data"), metadata=_doc("store and offsets directory"))
    auto_create_topics: bool = field(default=True, metadata=_doc("create unknown topics on first send"))
    default_queues: int = field(default=8, metadata=_doc("queues of an auto-created topic"))
    namesrv: str = field(default="", metadata=_doc("nameserver addresses, comma-separated (empty: none)"))
    heartbeat_ms: int = field(default=10_000, metadata=_doc("registration heartbeat to every nameserver"))
    master: str = field(default="", metadata=_doc("a slave's master address HOST:PORT"))
    master_member: str = field(
        default="", metadata=_doc("the master's members' port (replication) with TLS; empty: `master`")
    )
    controller: str = field(
        default="",
        metadata=_doc(
            "failover controllers HOST:PORT[,HOST:PORT...] (nameservers with [controller] enabled, "
            "at most 16; the leading one answers, the others name it); empty: no failover"
        ),
    )
    controller_heartbeat_ms: int = field(
        default=1000, metadata=_doc("heartbeat to the controller; a master's renews its lease")
    )
    election_priority: int = field(default=0, metadata=_doc("breaks election ties: higher wins"))
    retry_delays: str = field(
        default=DEFAULT_DELAYS,
        metadata=_doc("delay before each redelivery of a failed message (attempt n: level n, then the last)"),
    )
    pop_max_attempts: int = field(
        default=16,
        metadata=_doc("deliveries of a popped message before it goes to %DLQ%<group> (as push consumers)"),
    )
    pop_commit_interval_ms: int = field(
        default=5000,
        metadata=_doc(
            "the pop revive pass commits a queue's group offset at most this often "
            "(each commit rewrites offsets.json); 0: on every pass"
        ),
    )
    pop_live_ms: int = field(
        default=60_000,
        metadata=_doc(
            "a group that popped from a topic this recently counts as live: an offset reset of it "
            "is refused unless forced (longer than the pops' long-poll wait)"
        ),
    )
    max_delay_ms: int = field(
        default=DEFAULT_MAX_DELAY_MS,
        metadata=_doc("how far ahead a message's deliver_at_ms may be (the timer; past it: refused)"),
    )
    timer_max_pending: int = field(
        default=500_000, metadata=_doc("messages the timer holds due later; past it sends are refused (busy)")
    )
    timer_max_pending_bytes: int = field(
        default=1 << 30,
        metadata=_doc("body bytes the timer holds due later; past it sends are refused (busy)"),
    )
    transaction_check_after_ms: int = field(
        default=6000,
        metadata=_doc("a half message open this long is an orphan: its producer is asked (RocketMQ: 6 s)"),
    )
    transaction_check_interval_ms: int = field(
        default=60_000, metadata=_doc("an orphan is asked again this long after each check")
    )
    transaction_max_checks: int = field(
        default=15, metadata=_doc("checks of an orphan before the broker rolls it back (RocketMQ: 15)")
    )
    transaction_max_open: int = field(
        default=100_000,
        metadata=_doc("open transactions (half messages); past it transactional sends are refused (busy)"),
    )

    @property
    def nameservers(self) -> list[str]:
        return [a.strip() for a in self.namesrv.split(",") if a.strip()]

    @property
    def controllers(self) -> list[str]:
        """`controller` as a list, in the order given (the first is tried first)."""
        return [a.strip() for a in self.controller.split(",")] if self.controller.strip() else []

    def validate(self, prefix: str = "broker") -> None:
        require(
            bool(_NAME.fullmatch(self.cluster)),
            f"{prefix}.cluster",
            "must match [A-Za-z0-9_.-]{1,64}",
        )
        require(
            bool(_NAME.fullmatch(self.broker_name)),
            f"{prefix}.broker_name",
            "must match [A-Za-z0-9_.-]{1,64}",
        )
        require(self.broker_id >= 0, f"{prefix}.broker_id", "must be >= 0")
        require(self.role in (Role.MASTER, Role.SLAVE), f"{prefix}.role", "must be 'master' or 'slave'")
        if self.controller:
            controllers = self.controllers
            for a in controllers:
                parse_address(a, f"{prefix}.controller")
            require(
                len(set(controllers)) == len(controllers), f"{prefix}.controller", "lists an address twice"
            )
            require(len(controllers) <= MAX_CONTROLLERS, f"{prefix}.controller", f"at most {MAX_CONTROLLERS}")
            require(self.broker_id >= 1, f"{prefix}.broker_id", "must be >= 1 with a controller (a node id)")
            require(self.controller_heartbeat_ms >= 10, f"{prefix}.controller_heartbeat_ms", "must be >= 10")
        else:
            require(
                (self.broker_id == 0) == (self.role is Role.MASTER),
                f"{prefix}.broker_id",
                "must be 0 for a master and > 0 for a slave",
            )
        parse_address(self.listen, f"{prefix}.listen")
        require(1 <= self.default_queues <= 1024, f"{prefix}.default_queues", "must be in 1..1024")
        for a in self.nameservers:
            parse_address(a, f"{prefix}.namesrv")
        require(self.heartbeat_ms >= 10, f"{prefix}.heartbeat_ms", "must be at least 10")
        try:
            parse_delays(self.retry_delays)
        except InvalidArgumentError as exc:
            raise ConfigError(f"{prefix}.retry_delays", exc.message) from exc
        require(1 <= self.pop_max_attempts <= 1000, f"{prefix}.pop_max_attempts", "must be in 1..1000")
        require(
            0 <= self.pop_commit_interval_ms <= DAY_MS,
            f"{prefix}.pop_commit_interval_ms",
            f"must be in 0..{DAY_MS} (a day)",
        )
        require(
            1000 <= self.pop_live_ms <= DAY_MS, f"{prefix}.pop_live_ms", f"must be in 1000..{DAY_MS} (a day)"
        )
        require(
            1000 <= self.max_delay_ms <= 366 * 86_400_000, f"{prefix}.max_delay_ms", "must be in 1000..1 year"
        )
        require(self.timer_max_pending >= 1, f"{prefix}.timer_max_pending", "must be at least 1")
        require(self.timer_max_pending_bytes >= 1, f"{prefix}.timer_max_pending_bytes", "must be at least 1")
        for key, lo, hi in (
            ("transaction_check_after_ms", 100, DAY_MS),
            ("transaction_check_interval_ms", 100, DAY_MS),
            ("transaction_max_checks", 1, 1000),
            ("transaction_max_open", 1, 10_000_000),
        ):
            require(lo <= getattr(self, key) <= hi, f"{prefix}.{key}", f"must be in {lo}..{hi}")
        if self.role is Role.SLAVE and not self.controller:
            require(bool(self.master), f"{prefix}.master", "a slave needs its master's address")
        if self.master:
            parse_address(self.master, f"{prefix}.master")
        if self.master_member:
            parse_address(self.master_member, f"{prefix}.master_member")


@dataclass(frozen=True, slots=True)
class ServerSection:
    max_workers: int = field(default=64, metadata=_doc("gRPC server threads; a held long poll occupies one"))
    max_concurrent_rpcs: int = field(
        default=512, metadata=_doc("calls beyond this are refused with RESOURCE_EXHAUSTED")
    )
    max_message_bytes: int = field(default=64 * 1024 * 1024, metadata=_doc("gRPC send/receive message limit"))
    grace_ms: int = field(default=5000, metadata=_doc("SIGTERM: time for calls in flight"))
    metrics_listen: str = field(
        default="127.0.0.1:0",
        metadata=_doc("HOST:PORT of the Prometheus /metrics endpoint (HTTPS with [tls]); empty: off"),
    )
    member_listen: str = field(
        default="",
        metadata=_doc(
            "with [tls]: HOST:PORT of the cluster members' port (mutual TLS); empty: listen's host, port 0"
        ),
    )
    enable_drills: bool = field(default=False, metadata=_doc("serve drill-only RPCs (Isolate): for drills"))
    insecure: bool = field(
        default=False,
        metadata=_doc("allow serving a non-loopback address without [tls] and [auth] (--insecure)"),
    )

    def member_listen_for(self, listen: str) -> str:
        """Where the members' port listens: as configured, else `listen`'s host, port 0."""
        return self.member_listen or f"{listen.rpartition(':')[0]}:0"

    def validate(self, prefix: str = "server") -> None:
        if self.member_listen:
            parse_address(self.member_listen, f"{prefix}.member_listen")
        require(self.max_workers >= 2, f"{prefix}.max_workers", "must be at least 2")
        require(self.max_concurrent_rpcs >= 1, f"{prefix}.max_concurrent_rpcs", "must be positive")
        require(self.max_message_bytes >= 1024 * 1024, f"{prefix}.max_message_bytes", "must be >= 1 MiB")
        require(self.grace_ms >= 0, f"{prefix}.grace_ms", "must be >= 0")


@dataclass(frozen=True, slots=True)
class PullSection:
    max_wait_ms: int = field(default=30_000, metadata=_doc("cap on a pull's long-poll wait"))
    max_messages: int = field(default=1024, metadata=_doc("cap on messages per pull"))
    max_bytes: int = field(default=4 * 1024 * 1024, metadata=_doc("cap on bytes per pull"))
    max_held_pulls: int = field(
        default=0,
        metadata=_doc(
            "long polls held at once (0: half of server.max_workers); beyond it a pull is "
            "answered at once, so held pulls never take every server thread"
        ),
    )

    budget_bytes: int = field(
        default=0, metadata=_doc("page-cache budget for read redirection; 0: computed (psutil, cgroup)")
    )
    hot_ratio: float = field(default=0.4, metadata=_doc("share of the memory limit counted as hot"))
    return_ratio: float = field(
        default=0.8, metadata=_doc("a queue sent to a slave comes back below this x budget")
    )
    budget_refresh_ms: int = field(default=1000, metadata=_doc("how often the budget is re-sampled"))
    redirect: bool = field(default=True, metadata=_doc("suggest slaves for backlogs over budget"))
    hot_max_messages: int = field(
        default=256, metadata=_doc("per-pull messages served from cache (256 KiB usually binds first)")
    )
    hot_max_bytes: int = field(default=256 * 1024, metadata=_doc("per-pull bytes served from cache"))
    cold_max_messages: int = field(default=8, metadata=_doc("per-pull messages served from disk"))
    cold_max_bytes: int = field(default=64 * 1024, metadata=_doc("per-pull bytes served from disk"))

    def validate(self, prefix: str = "pull") -> None:
        require(self.max_wait_ms >= 0, f"{prefix}.max_wait_ms", "must be >= 0")
        require(self.max_messages >= 1, f"{prefix}.max_messages", "must be positive")
        require(self.max_bytes >= 1024, f"{prefix}.max_bytes", "must be >= 1024")
        require(self.max_held_pulls >= 0, f"{prefix}.max_held_pulls", "must be >= 0")
        require(self.budget_bytes >= 0, f"{prefix}.budget_bytes", "must be >= 0 (0: computed)")
        require(0 < self.hot_ratio <= 1, f"{prefix}.hot_ratio", "must be in (0, 1]")
        require(0 < self.return_ratio <= 1, f"{prefix}.return_ratio", "must be in (0, 1]")
        require(self.budget_refresh_ms > 0, f"{prefix}.budget_refresh_ms", "must be positive")
        for k in ("hot_max_messages", "hot_max_bytes", "cold_max_messages", "cold_max_bytes"):
            require(getattr(self, k) > 0, f"{prefix}.{k}", "must be positive")


@dataclass(frozen=True, slots=True)
class ReplicationSection:
    mode: ReplicationMode = field(
        default=ReplicationMode.ASYNC,
        metadata=_doc("sync: a send is acknowledged once enough slaves have it"),
    )
    min_insync_replicas: int = field(default=1, metadata=_doc("slaves that must ack a sync send"))
    sync_timeout_ms: int = field(default=3000, metadata=_doc("sync send wait before SLAVE_TIMEOUT"))
    max_lag_bytes: int = field(
        default=64 * 1024 * 1024, metadata=_doc("a slave further behind is out of the in-sync set")
    )
    max_ack_age_ms: int = field(
        default=10_000, metadata=_doc("a slave silent longer is out of the in-sync set")
    )
    chunk_bytes: int = field(default=1024 * 1024, metadata=_doc("CommitLog bytes per chunk"))
    heartbeat_ms: int = field(default=500, metadata=_doc("idle stream heartbeat"))
    handshake_timeout_ms: int = field(
        default=5000, metadata=_doc("a replication stream without a handshake this long is closed")
    )
    secret: str = field(
        default="",
        repr=False,
        metadata=_doc("shared cluster secret (else the TAILRACE_CLUSTER_SECRET environment variable)"),
    )

    @property
    def sync(self) -> bool:
        """Whether sends wait for slaves (sync mode, with at least one required)."""
        return self.mode is ReplicationMode.SYNC and self.min_insync_replicas > 0

    def resolved_secret(self) -> str:
        """The shared cluster secret: the configured one, else $TAILRACE_CLUSTER_SECRET."""
        return self.secret or os.environ.get("TAILRACE_CLUSTER_SECRET", "")

    def validate(self, prefix: str = "replication") -> None:
        require(0 <= self.min_insync_replicas <= 16, f"{prefix}.min_insync_replicas", "must be in 0..16")
        require(self.sync_timeout_ms > 0, f"{prefix}.sync_timeout_ms", "must be positive")
        require(self.max_lag_bytes > 0, f"{prefix}.max_lag_bytes", "must be positive")
        require(self.max_ack_age_ms > 0, f"{prefix}.max_ack_age_ms", "must be positive")
        ok = 64 * 1024 <= self.chunk_bytes <= 16 * 1024 * 1024
        require(ok, f"{prefix}.chunk_bytes", "must be 64 KiB..16 MiB")
        require(self.heartbeat_ms >= 10, f"{prefix}.heartbeat_ms", "must be at least 10")
        require(self.handshake_timeout_ms >= 100, f"{prefix}.handshake_timeout_ms", "must be at least 100")


@dataclass(frozen=True, slots=True)
class QuotasSection:
    """Limits on what clients can make a broker hold (QUOTA_EXCEEDED, a
    RESOURCE_EXHAUSTED status naming the limit, beyond them). Message,
    batch and property sizes are in `[store]`."""

    max_topics: int = field(default=10_000, metadata=_doc("topics per broker (the broker's own included)"))
    max_groups: int = field(
        default=10_000, metadata=_doc("consumer groups with live members, per (group, topic)")
    )
    max_members_per_group: int = field(default=1_000, metadata=_doc("live members of one (group, topic)"))
    max_queue_locks: int = field(default=100_000, metadata=_doc("queue locks held at once"))
    max_pop_inflight_per_queue: int = field(
        default=10_000, metadata=_doc("popped, unacked messages of one (group, topic, queue)")
    )
    max_pop_inflight_per_group: int = field(
        default=100_000, metadata=_doc("popped, unacked messages of one group on one broker")
    )
    idle_ttl_ms: int = field(
        default=600_000,
        metadata=_doc("a (group, topic, queue) not pulled this long is forgotten (redirect state, metrics)"),
    )

    def validate(self, prefix: str = "quotas") -> None:
        for key in (
            "max_topics",
            "max_groups",
            "max_members_per_group",
            "max_queue_locks",
            "max_pop_inflight_per_queue",
            "max_pop_inflight_per_group",
        ):
            require(getattr(self, key) >= 1, f"{prefix}.{key}", "must be at least 1")
        require(self.idle_ttl_ms >= 1000, f"{prefix}.idle_ttl_ms", "must be at least 1000")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    broker: BrokerSection = field(default_factory=BrokerSection)
    server: ServerSection = field(default_factory=ServerSection)
    pull: PullSection = field(default_factory=PullSection)
    replication: ReplicationSection = field(default_factory=ReplicationSection)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsSection = field(default_factory=TlsSection)
    auth: AuthSection = field(default_factory=AuthSection)
    quotas: QuotasSection = field(default_factory=QuotasSection)

    def validate(self) -> None:
        require(
            self.pull.max_held_pulls < self.server.max_workers,
            "pull.max_held_pulls",
            "must leave server threads for other calls (< server.max_workers)",
        )
        require(
            self.server.max_message_bytes >= self.pull.max_bytes + 64 * 1024,
            "server.max_message_bytes",
            "must exceed pull.max_bytes (a pull response must fit)",
        )
        st = self.store
        require(
            not st.retention_deletes_unconsumed or self.broker.max_delay_ms <= st.retention_hours * 3_600_000,
            "broker.max_delay_ms",
            "must be at most store.retention_hours with store.retention_deletes_unconsumed "
            "(retention would delete delayed messages before they are due)",
        )


SECTIONS: dict[str, type[Any]] = {
    "broker": BrokerSection,
    "server": ServerSection,
    "pull": PullSection,
    "replication": ReplicationSection,
    "store": StoreConfig,
    "tls": TlsSection,
    "auth": AuthSection,
    "quotas": QuotasSection,
}


def _parse_value(raw: str) -> Any:
    """A --set value: TOML syntax if it parses (numbers, booleans, quoted
    strings), else the bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_broker_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> BrokerConfig:
    """Read `path` (optional), apply `overrides` ({"section.key": value}), validate."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {str(exc)[:200]}") from exc
        for name, table in data.items():
            if name not in SECTIONS:
                raise ConfigError(name, "unknown section")
            if not isinstance(table, dict):
                raise ConfigError(name, "must be a table")
            tables[name].update(table)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(dotted, "unknown key (use section.key)")
        tables[section][key] = _parse_value(value) if isinstance(value, str) else value
    built = {name: load_section(cls, tables[name], name) for name, cls in SECTIONS.items()}
    cfg = BrokerConfig(**built)
    cfg.validate()
    return cfg


def documented_keys() -> list[tuple[str, Any, str]]:
    """(section.key, default, doc) for every broker config key."""
    return [
        (f"{name}.{key}", default, doc)
        for name, cls in SECTIONS.items()
        for key, default, doc in describe(cls)
    ]
