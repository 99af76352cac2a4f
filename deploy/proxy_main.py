"""`tailrace proxy`: RocketMQ 5's gRPC protocol for the official clients.

A stateless process, as RocketMQ 5's cluster-mode proxy: it serves
`apache.rocketmq.v2.MessagingService` (core/rocketmq/service.py) and is a
client of the cluster (deploy/proxy_backend.py), signing its native calls
with an account of its own (`proxy.profile`). Same conventions as `tailrace
nameserver`: TOML config, `--listen` with port 0, ready file, SIGTERM, logs
with the node id. With `[tls]` the v2 port serves TLS with the proxy's
certificate and asks for no client certificate (official clients have
none); `[auth]` names the accounts file the v2 signature is checked
against (the cluster's own).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.profile import Profile
from core.broker_config import ServerSection, parse_address
from core.config import load_section, require
from core.errors import ConfigError
from core.grpc_server import build_server, set_serving
from core.pb.rocketmq.v2 import service_pb2 as s_pb
from core.rocketmq.renew import Renewer, RenewTable
from core.rocketmq.service import MessagingService, add_to_server
from core.rocketmq.settings import CONSUMER_ATTEMPTS, ServerSettings
from core.rocketmq.streams import StreamGate
from core.rocketmq.transactions import OrphanPump, ProducerStreams
from core.security.acl import AclFile
from core.security.config import AuthSection, require_protected
from core.security.mqv2 import Mqv2Policy
from core.security.tls import TlsSection, client_port_credentials
from deploy.broker_main import setup_logging, write_ready_file
from deploy.nameserver_main import add_process_arguments, config_tables
from deploy.proxy_backend import HEADROOM_BYTES, ClusterBackend

log = logging.getLogger("tailrace.proxy")
SERVICE = "apache.rocketmq.v2.MessagingService"
MIN_LONG_POLLING_MS = 5_000  # the least long poll a consumer is given (RocketMQ's proxy's too)


@dataclass(frozen=True, slots=True)
class ProxySection:
    listen: str = field(
        default="127.0.0.1:8081", metadata={"doc": "HOST:PORT of the v2 port; port 0 picks one"}
    )
    advertise: str = field(
        default="",
        metadata={"doc": "HOST:PORT clients dial, named in routes (empty: listen host, bound port)"},
    )
    namesrv: str = field(default="", metadata={"doc": "nameservers, comma-separated (empty: the profile's)"})
    profile: str = field(
        default="",
        metadata={"doc": "client profile: CA and the proxy's own account (empty: $TAILRACE_PROFILE)"},
    )
    name: str = field(default="proxy", metadata={"doc": "its name (logs)"})
    cluster: str = field(default="DefaultCluster", metadata={"doc": "the cluster it fronts"})
    max_body_bytes: int = field(
        default=0, metadata={"doc": "body limit told to clients (0: the masters' record limit less 64 KiB)"}
    )
    cold_reads: bool = field(
        default=True,
        metadata={
            "doc": "read cold queues' bodies from the slaves the masters name (pops with bodies_elsewhere); "
            "false: every pop carries its bodies from the master (pull consumers' redirect unchanged)"
        },
    )
    long_polling_ms: int = field(
        default=20_000, metadata={"doc": "the longest long poll a consumer is given"}
    )
    auto_renew_invisible_ms: int = field(
        default=60_000,
        metadata={
            "doc": "a push consumer's messages' invisibility, renewed by as much again while its client "
            "lives (RocketMQ's renew slice)"
        },
    )
    auto_renew_max_ms: int = field(
        default=900_000,
        metadata={"doc": "how long a push consumer's message is renewed at most (then it comes back)"},
    )
    auto_renew_max_handles: int = field(
        default=100_000, metadata={"doc": "messages renewed at once (past it a new one is not renewed)"}
    )
    client_alive_ms: int = field(
        default=30_000,
        metadata={
            "doc": "a client with no Telemetry stream open here is alive this long after its last "
            "Heartbeat (its messages are renewed meanwhile)"
        },
    )
    max_receives: int = field(
        default=32,
        metadata={
            "doc": "receives held at once (each holds a server thread while it long-polls); "
            "with max_telemetry_streams < server.max_workers"
        },
    )
    max_receives_per_account: int = field(
        default=16,
        metadata={"doc": "receives one account holds at once (anonymous callers share one); <= max_receives"},
    )
    receive_write_ms: int = field(
        default=10_000,
        metadata={
            "doc": "the most a receive's messages may take to be written to a client; past it the call "
            "ends and its messages are given back (a client that does not read frees its thread)"
        },
    )
    max_telemetry_streams: int = field(
        default=192,
        metadata={
            "doc": "open Telemetry streams (one per client; each holds a server thread); < server.max_workers"
        },
    )
    max_telemetry_streams_per_account: int = field(
        default=128, metadata={"doc": "open Telemetry streams of one account (anonymous callers share one)"}
    )
    keepalive_ms: int = field(
        default=30_000,
        metadata={
            "doc": "ping an idle client this often; one silent as long again is dropped (thread freed)"
        },
    )
    allow_anonymous: bool = field(
        default=False,
        metadata={
            "doc": "DANGER: serve without [auth] acl_file though the proxy's profile has an account or TLS: "
            "then every caller acts as the proxy's own account"
        },
    )

    def validate(self, prefix: str = "proxy") -> None:
        parse_address(self.listen, f"{prefix}.listen")
        if self.advertise:
            _, port = parse_address(self.advertise, f"{prefix}.advertise")
            require(port > 0, f"{prefix}.advertise", "needs a port")
        require(self.max_body_bytes >= 0, f"{prefix}.max_body_bytes", "must be >= 0")
        require(
            1000 <= self.long_polling_ms <= 300_000, f"{prefix}.long_polling_ms", "must be in 1000..300000"
        )
        require(
            1000 <= self.auto_renew_invisible_ms <= 12 * 3600 * 1000,
            f"{prefix}.auto_renew_invisible_ms",
            "must be in 1000..43200000",
        )
        require(
            self.auto_renew_invisible_ms <= self.auto_renew_max_ms <= 3 * 3600 * 1000,
            f"{prefix}.auto_renew_max_ms",
            "must be in auto_renew_invisible_ms..10800000 (3 h, RocketMQ's most)",
        )
        require(self.auto_renew_max_handles >= 0, f"{prefix}.auto_renew_max_handles", "must be >= 0")
        require(self.client_alive_ms >= 1000, f"{prefix}.client_alive_ms", "must be >= 1000")
        require(self.max_receives >= 1, f"{prefix}.max_receives", "must be positive")
        require(
            1 <= self.max_receives_per_account <= self.max_receives,
            f"{prefix}.max_receives_per_account",
            "must be in 1..max_receives",
        )
        require(
            100 <= self.receive_write_ms <= 300_000, f"{prefix}.receive_write_ms", "must be in 100..300000"
        )
        require(self.max_telemetry_streams >= 1, f"{prefix}.max_telemetry_streams", "must be positive")
        require(
            self.max_telemetry_streams_per_account >= 1,
            f"{prefix}.max_telemetry_streams_per_account",
            "must be positive",
        )
        require(self.keepalive_ms >= 1000, f"{prefix}.keepalive_ms", "must be >= 1000")


@dataclass(frozen=True)
class ProxyConfig:
    proxy: ProxySection
    server: ServerSection
    tls: TlsSection
    auth: AuthSection


SECTIONS: dict[str, type[Any]] = {
    "proxy": ProxySection,
    "server": ServerSection,
    "tls": TlsSection,
    "auth": AuthSection,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_process_arguments(
        p, "serve a non-loopback address without [tls] and [auth] (anyone who reaches it may send)"
    )


PROXY_MAX_WORKERS = 256  # its default server.max_workers: most hold a client's Telemetry stream


def load(args: argparse.Namespace) -> ProxyConfig:
    tables = config_tables(args, SECTIONS)
    tables["server"].setdefault("max_workers", PROXY_MAX_WORKERS)
    if args.listen:
        tables["proxy"]["listen"] = args.listen
    if getattr(args, "insecure", False):
        tables["server"]["insecure"] = True
    return ProxyConfig(**{n: load_section(cls, tables[n], n) for n, cls in SECTIONS.items()})


def _wiring(cfg: ProxyConfig) -> tuple[Profile, list[str]]:
    """The proxy's own client profile and the nameservers it asks."""
    px = cfg.proxy
    profile = Profile.load(px.profile) if px.profile else Profile.resolve(None)
    namesrv = [a for a in px.namesrv.split(",") if a] or list(profile.namesrv)
    if not namesrv:
        raise ConfigError("proxy.namesrv", "no nameserver: set it, or give a profile that names them")
    host = px.listen.rpartition(":")[0]
    require_protected([("proxy.listen", host)], cfg.tls, cfg.auth, cfg.server.insecure)
    require(
        px.max_telemetry_streams + px.max_receives < cfg.server.max_workers,
        "proxy.max_telemetry_streams",
        "with proxy.max_receives, must leave server threads for other calls "
        f"(< server.max_workers, {cfg.server.max_workers})",
    )
    if (
        not cfg.auth.acl_file
        and (profile.access_key or profile.ca_file or profile.ca_pem)
        and not px.allow_anonymous
    ):
        raise ConfigError(
            "auth.acl_file",
            "the proxy's profile has an account or TLS (a secured cluster) but no accounts file checks "
            "its own callers: every caller would act as the proxy's account. Set auth.acl_file "
            "(or proxy.allow_anonymous = true to accept that)",
        )
    if not px.advertise and host in ("0.0.0.0", "::", "[::]", ""):
        raise ConfigError("proxy.advertise", f"listening on {host}: give the HOST:PORT clients dial")
    return profile, namesrv


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
        profile, namesrv = _wiring(cfg)
        creds = client_port_credentials(cfg.tls) if cfg.tls.enabled else None
        acl = AclFile(Path(cfg.auth.acl_file), _wall_ms()) if cfg.auth.acl_file else None
    except ConfigError as exc:
        print(f"tailrace proxy: bad config: {exc}", flush=True)
        return 2
    px, server_cfg = cfg.proxy, cfg.server
    setup_logging(px.name, args.log_level, args.log_file)
    backend = ClusterBackend(
        namesrv, profile, 4 * 1024 * 1024 - HEADROOM_BYTES, px.max_body_bytes, cluster=px.cluster,
        cold_reads=px.cold_reads,
    )  # fmt: skip
    policy = Mqv2Policy(acl, cfg.auth.allow_anonymous, cfg.auth.max_skew_ms, cfg.auth.mqv2_any_timezone)
    limit = backend.refresh_limit()  # asked of the masters now, then every 30 s on its own thread
    send_cap = max(limit, px.max_body_bytes) + HEADROOM_BYTES
    server, health = build_server(
        server_cfg.max_workers,
        server_cfg.max_concurrent_rpcs,
        server_cfg.max_message_bytes,
        max_receive_bytes=send_cap,
        request_limits=request_limits(send_cap),
        options=keepalive_options(px.keepalive_ms),
    )
    host = px.listen.rpartition(":")[0]
    try:
        port = (
            server.add_secure_port(px.listen, creds)
            if creds is not None
            else server.add_insecure_port(px.listen)
        )
    except RuntimeError as exc:
        port, why = 0, str(exc)
    else:
        why = "in use or not an address here"
    if not port:
        log.error("cannot listen on %s: %s", px.listen, why)
        backend.close()
        return 2
    endpoint = px.advertise or f"{host}:{port}"
    long_polling = px.long_polling_ms

    def settings() -> ServerSettings:
        return ServerSettings(
            backend.max_body_bytes(),
            long_polling,
            min_long_polling_ms=min(MIN_LONG_POLLING_MS, long_polling),
            max_attempts=backend.max_attempts(CONSUMER_ATTEMPTS),
            auto_renew_invisible_ms=px.auto_renew_invisible_ms,
        )

    streams = StreamGate(px.max_telemetry_streams, px.max_telemetry_streams_per_account)
    receives = StreamGate(px.max_receives, px.max_receives_per_account, "held receives")
    renewer = Renewer(backend, renew_table(px))
    producers = ProducerStreams()
    pump = OrphanPump(backend, producers)  # orphan checks to producers' Telemetry streams
    service = MessagingService(
        backend, policy, endpoint, settings, streams=streams, receives=receives, renewer=renewer,
        producers=producers,
    )  # fmt: skip
    service.consumption.write_s = px.receive_write_ms / 1000
    add_to_server(service, server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend.start()
    renewer.start()
    pump.start()
    server.start()
    set_serving(health, True, SERVICE)
    log.info(
        "proxy serving RocketMQ v2 on %s (%s, clients dial %s) for nameservers %s; body limit %d bytes",
        f"{host}:{port}",
        "TLS" if creds is not None else "plaintext",
        endpoint,
        ",".join(namesrv),
        limit,
    )
    if args.ready_file is not None:
        info = {"address": f"{host}:{port}", "endpoint": endpoint, "pid": os.getpid(), "role": "proxy"}
        write_ready_file(args.ready_file, {**info, "name": px.name, "cluster": px.cluster})
    stop.wait()
    set_serving(health, False, SERVICE)
    server.stop(server_cfg.grace_ms / 1000).wait()
    renewer.close()
    pump.close()
    backend.close()
    log.info("stopped cleanly")
    return 0


def renew_table(px: ProxySection) -> RenewTable:
    """The auto-renew decisions (core/rocketmq/renew.py) from the config."""
    return RenewTable(
        px.auto_renew_invisible_ms,
        max_total_s=px.auto_renew_max_ms / 1000,
        max_handles=px.auto_renew_max_handles,
        alive_s=px.client_alive_ms / 1000,
    )


OTHER_REQUEST_BYTES = 64 * 1024  # every v2 request but SendMessage (a Telemetry command: per command)


def request_limits(send_bytes: int) -> dict[str, int]:
    """Each v2 method's largest request, refused before it is decoded:
    SendMessage's is the body limit and headroom (the bodies of one request
    together, as RocketMQ's batch limit), every other 64 KiB."""
    methods = s_pb.DESCRIPTOR.services_by_name["MessagingService"].methods
    out = {f"/{SERVICE}/{m.name}": OTHER_REQUEST_BYTES for m in methods}
    out[f"/{SERVICE}/SendMessage"] = send_bytes
    return out


def keepalive_options(keepalive_ms: int) -> list[tuple[str, int]]:
    """Ping each client idle for `keepalive_ms`; one that does not answer
    within as long again is dropped, its streams cancelled and their
    threads freed (a vanished client would hold one forever). Clients may
    ping as often as every 10 s without being told off (some keep alive on
    their own)."""
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
