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
from core.rocketmq.service import MessagingService, add_to_server
from core.rocketmq.settings import ServerSettings
from core.security.acl import AclFile
from core.security.config import AuthSection, require_protected
from core.security.mqv2 import Mqv2Policy
from core.security.tls import TlsSection, client_port_credentials
from deploy.broker_main import setup_logging, write_ready_file
from deploy.nameserver_main import config_tables
from deploy.proxy_backend import HEADROOM_BYTES, ClusterBackend

log = logging.getLogger("tailrace.proxy")
SERVICE = "apache.rocketmq.v2.MessagingService"


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
    long_polling_ms: int = field(
        default=20_000, metadata={"doc": "the longest long poll a consumer is given"}
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
    p.add_argument("--config", type=Path)
    p.add_argument("--ready-file", type=Path)
    p.add_argument("--log-file", type=Path, help="log here, rotated by size (default: stderr)")
    p.add_argument("--listen")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without [tls] and [auth] (anyone who reaches it may send)",
    )


def load(args: argparse.Namespace) -> ProxyConfig:
    tables = config_tables(args, SECTIONS)
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
    backend = ClusterBackend(namesrv, profile, 4 * 1024 * 1024 - HEADROOM_BYTES, px.max_body_bytes)
    policy = Mqv2Policy(acl, cfg.auth.allow_anonymous, cfg.auth.max_skew_ms, cfg.auth.mqv2_any_timezone)
    server, health = build_server(
        server_cfg.max_workers, server_cfg.max_concurrent_rpcs, server_cfg.max_message_bytes
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
        return ServerSettings(backend.max_body_bytes(), long_polling)

    add_to_server(MessagingService(backend, policy, endpoint, settings), server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    limit = backend.refresh_limit()  # asked of the masters now, then every 30 s on its own thread
    backend.start()
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
    backend.close()
    log.info("stopped cleanly")
    return 0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
