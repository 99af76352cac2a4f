"""`tailrace nameserver`: run one nameserver process (same conventions as the
broker: TOML config, `--listen` with port 0, ready file, SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.broker_config import ServerSection, parse_address
from core.clock import now_ms
from core.config import load_section, require
from core.errors import ConfigError, TailraceError
from core.grpc_server import build_server, set_serving
from core.pb.tailrace.v1 import nameserver_pb2_grpc
from core.security.config import AuthSection
from core.security.identity import Kind, Member
from core.security.serving import ProcessSecurity
from core.security.tls import TlsSection
from deploy.broker_main import setup_logging, write_ready_file
from deploy.console.collect import ConsoleData, wall_ms
from deploy.console.config import ConsoleSection
from deploy.console.server import ConsoleServer
from deploy.controller_setup import ControllerRuntime, ControllerSection, build_controller
from nameserver.controller import LeaderInfo
from nameserver.registry import BrokerRegistry
from nameserver.service import NameServerService

log = logging.getLogger("tailrace.nameserver")


@dataclass(frozen=True, slots=True)
class NameserverSection:
    listen: str = field(default="127.0.0.1:9876", metadata={"doc": "HOST:PORT; port 0 picks one"})
    cluster: str = field(
        default="DefaultCluster", metadata={"doc": "the cluster it serves: member certificates must name it"}
    )
    name: str = field(default="namesrv", metadata={"doc": "its name (its certificate names it)"})
    expire_check_ms: int = field(default=1000, metadata={"doc": "how often silent brokers are looked for"})

    def validate(self, prefix: str = "nameserver") -> None:
        parse_address(self.listen, f"{prefix}.listen")
        require(self.expire_check_ms > 0, f"{prefix}.expire_check_ms", "must be positive")


def add_process_arguments(p: argparse.ArgumentParser, insecure_help: str) -> None:
    """The flags every server process but the broker takes (config, ready
    file, log file, listen, --set, --insecure)."""
    p.add_argument("--config", type=Path)
    p.add_argument("--ready-file", type=Path)
    p.add_argument("--log-file", type=Path, help="log here, rotated by size (default: stderr)")
    p.add_argument("--listen")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--insecure", action="store_true", help=insecure_help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_process_arguments(
        p, "serve a non-loopback address without [tls] and [auth] (anyone who reaches it owns it)"
    )


@dataclass(frozen=True)
class NameserverConfig:
    nameserver: NameserverSection
    server: ServerSection
    controller: ControllerSection
    tls: TlsSection
    auth: AuthSection
    console: ConsoleSection


SECTIONS: dict[str, type[Any]] = {
    "nameserver": NameserverSection,
    "server": ServerSection,
    "controller": ControllerSection,
    "tls": TlsSection,
    "auth": AuthSection,
    "console": ConsoleSection,
}


def load(args: argparse.Namespace) -> NameserverConfig:
    tables = config_tables(args, SECTIONS)
    if args.listen:
        tables["nameserver"]["listen"] = args.listen
    if getattr(args, "insecure", False):
        tables["server"]["insecure"] = True
    return NameserverConfig(**{n: load_section(cls, tables[n], n) for n, cls in SECTIONS.items()})


def config_tables(args: argparse.Namespace, sections: dict[str, type[Any]]) -> dict[str, dict[str, Any]]:
    """Each section's table: the `--config` file's, then `--set SECTION.KEY=VALUE`
    (values parsed as TOML when they parse, else bare strings)."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in sections}
    if args.config is not None:
        try:
            data = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError("--config", f"cannot read {args.config}: {str(exc)[:200]}") from exc
        for name, table in data.items():
            if name not in tables:
                raise ConfigError(name, "unknown section")
            if not isinstance(table, dict):
                raise ConfigError(name, "must be a table")
            tables[name].update(table)
    for item in args.set:
        key, sep, value = item.partition("=")
        section, _, sub = key.partition(".")
        if not sep or section not in tables or not sub:
            raise ConfigError(item, f"--set takes SECTION.KEY=VALUE ({', '.join(sections)})")
        try:
            tables[section][sub] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            tables[section][sub] = value
    return tables


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
        ns, server_cfg, ctl_cfg = cfg.nameserver, cfg.server, cfg.controller
        member_listen = server_cfg.member_listen_for(ns.listen)
        security = ProcessSecurity(
            Member(ns.cluster, Kind.NAMESERVER, ns.name),
            cfg.tls,
            cfg.auth,
            insecure=server_cfg.insecure,
            drills=server_cfg.enable_drills,
        )
        security.check_exposure(
            [
                ("nameserver.listen", ns.listen.rpartition(":")[0]),
                ("server.member_listen", member_listen.rpartition(":")[0]),
                ("server.metrics_listen", server_cfg.metrics_listen.rpartition(":")[0]),
                ("console.listen", cfg.console.listen.rpartition(":")[0]),
            ]
        )
    except ConfigError as exc:
        print(f"tailrace nameserver: bad config: {exc}", flush=True)
        return 2
    setup_logging("nameserver", args.log_level, args.log_file)
    host, _ = parse_address(ns.listen, "nameserver.listen")
    registry = BrokerRegistry()
    server, health = build_server(
        server_cfg.max_workers, server_cfg.max_concurrent_rpcs, server_cfg.max_message_bytes, [security.guard]
    )
    service = NameServerService(registry)
    nameserver_pb2_grpc.add_NameServerServicer_to_server(service, server)
    try:
        port, member_port = security.listen(server, ns.listen, member_listen, "nameserver.listen")
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    address = f"{host}:{port}"
    member_address = f"{member_listen.rpartition(':')[0]}:{member_port}"
    runtime: ControllerRuntime | None = None
    if ctl_cfg.enabled:
        try:  # a damaged controller.json names the file and what to do
            runtime = build_controller(ctl_cfg, ns.cluster, LeaderInfo(ns.name, member_address), cfg.tls)
        except TailraceError as exc:
            log.error("cannot start: %s", exc)
            print(f"tailrace nameserver: cannot start: {exc}", file=sys.stderr, flush=True)
            return 2
        service.controller = runtime.controller
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    metrics_address = ""
    if server_cfg.metrics_listen:
        mhost, mport = parse_address(server_cfg.metrics_listen, "server.metrics_listen")
        metrics_address = f"{mhost}:{service.metrics.serve(mhost, mport, security.metrics_tls)}"
    try:
        console = start_console(cfg, security, address, registry, runtime)
    except (ConfigError, OSError) as exc:
        log.error("cannot start the console: %s", exc)
        server.stop(0)
        return 2
    set_serving(health, True, "tailrace.v1.NameServer")
    if security.tls is not None:
        log.info(
            "nameserver serving clients on %s (TLS), members on %s (mutual TLS)", address, member_address
        )
    else:
        log.info("nameserver serving on %s (plaintext)", address)
    if args.ready_file is not None:
        info = {
            "address": address,
            "pid": os.getpid(),
            "role": "nameserver",
            "metrics_address": metrics_address,
            "member_address": member_address,
            "controller": runtime is not None,
            "console_url": console.url if console is not None else "",
        }
        write_ready_file(args.ready_file, info)
    if runtime is not None:
        runtime.start()
        log.info(
            "failover controller on (lease %d ms, %s store)",
            ctl_cfg.lease_ms,
            f"file in {ctl_cfg.data_dir}" if ctl_cfg.store == "file" else f"etcd at {ctl_cfg.etcd_endpoints}",
        )
    try:
        while not stop.wait(ns.expire_check_ms / 1000):
            for r in registry.expire(now_ms()):
                log.warning(
                    "dropped %s/%d at %s: silent for 3 heartbeats",
                    r.broker_name,
                    r.broker_id,
                    r.address,
                )
    except TailraceError as exc:
        log.error("%s", exc)
    set_serving(health, False, "tailrace.v1.NameServer")
    if console is not None:
        console.stop()
        console.data.stop()
        console.data.admin.close()
    if runtime is not None:
        runtime.close()
    server.stop(server_cfg.grace_ms / 1000).wait()
    log.info("stopped cleanly")
    return 0


def start_console(
    cfg: NameserverConfig,
    security: ProcessSecurity,
    address: str,
    registry: BrokerRegistry,
    runtime: ControllerRuntime | None,
) -> ConsoleServer | None:
    """The web console (deploy/console/), when `console.listen` is set: it
    asks the cluster through this nameserver's client port with
    `console.profile`, and serves on its own port."""
    c = cfg.console
    if not c.listen:
        return None
    from consumer.admin import Admin
    from consumer.profile import EMPTY, Profile

    profile = Profile.load(c.profile) if c.profile else EMPTY
    admin = Admin(namesrv=[address], profile=profile, timeout_s=5.0)
    ctl = runtime.controller if runtime is not None else None
    data = ConsoleData(
        c,
        admin,
        lambda: registry.clusters(now_ms()),
        (lambda: ctl.status(now_ms())) if ctl is not None else (lambda: None),
    )
    host, port = parse_address(c.listen, "console.listen")
    server = ConsoleServer(
        data, host, port, security.metrics_tls, security.policy.acl, cfg.auth.max_skew_ms, wall_ms
    )
    data.start()
    server.start()
    log.info(
        "console on %s (%s)", server.url, "signed requests, admin accounts" if security.policy.acl else "open"
    )
    return server
