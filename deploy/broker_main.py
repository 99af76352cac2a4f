"""`tailrace broker`: run one broker process.

Wires config, store, role logic and the gRPC server; handles SIGTERM
(stop taking requests, flush, clean-shutdown marker, exit 0) and writes the
ready file once the server answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from core.broker_config import BrokerConfig, documented_keys, load_broker_config, parse_address
from core.epochs import EpochFile
from core.errors import ConfigError, TailraceError
from core.fileutil import atomic_write
from core.grpc_server import build_server, set_serving
from core.offsets import ConsumerOffsets
from core.pb.tailrace.v1 import broker_pb2_grpc, replication_pb2_grpc
from core.registration import Registrar
from core.store import MessageStore
from master.controller_link import ControllerLink
from master.replication_service import ReplicationService
from master.scheduler import Scheduler
from master.service import BrokerService
from slave.broker import ReplicaBroker

log = logging.getLogger("tailrace.broker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (optional)")
    p.add_argument("--ready-file", type=Path, help="write JSON {address, pid, ...} once serving")
    p.add_argument("--log-file", type=Path, help="log here, rotated by size (default: stderr)")
    p.add_argument("--listen", help="HOST:PORT (port 0 picks a free port)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument("--broker-name", help="broker group name")
    p.add_argument("--broker-id", type=int, help="0 = master")
    p.add_argument("--role", choices=["master", "slave"])
    p.add_argument("--flush", choices=["async", "sync"])
    p.add_argument("--namesrv", help="nameserver addresses, comma-separated")
    p.add_argument("--master", help="a slave's master address HOST:PORT")
    p.add_argument("--budget-bytes", type=int, help="pin the page-cache budget (read redirection)")
    p.add_argument("--replication", choices=["async", "sync"], help="a master's replication mode")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any other config key (repeatable)",
    )
    p.add_argument("--print-config", action="store_true", help="list every key and exit")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(item, "--set takes SECTION.KEY=VALUE")
        out[key.strip()] = value.strip()
    flags = {
        "broker.listen": args.listen,
        "broker.data_dir": args.data_dir,
        "broker.broker_name": args.broker_name,
        "broker.broker_id": args.broker_id,
        "broker.role": args.role,
        "store.flush": args.flush,
        "broker.namesrv": args.namesrv,
        "broker.master": args.master,
        "pull.budget_bytes": args.budget_bytes,
        "replication.mode": args.replication,
    }
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(info).encode())


LOG_MAX_BYTES = 64 * 1024 * 1024
LOG_BACKUPS = 5


def setup_logging(node: str, level: str = "INFO", log_file: Path | None = None) -> None:
    """Node id on every line; to `log_file` rotated by size (64 MiB, 5 kept),
    else to stderr."""
    fmt = f"%(asctime)s %(levelname)s [{node}] %(name)s: %(message)s"
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS))
    else:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(level=level.upper(), format=fmt, handlers=handlers, force=True)


def _announcer(registrar: Registrar | None, link: ControllerLink | None) -> Callable[[], None]:
    """After a role change: tell the nameservers and the controller at once
    (clients find a new master by its registration, not after a heartbeat)."""

    def announce() -> None:
        if link is not None:
            link.poke()
        if registrar is not None:
            threading.Thread(target=registrar.register_once, name="announce", daemon=True).start()

    return announce


def serve(cfg: BrokerConfig, ready_file: Path | None) -> int:
    b = cfg.broker
    host, _ = parse_address(b.listen, "broker.listen")
    b.data_dir.mkdir(parents=True, exist_ok=True)
    store = MessageStore(b.data_dir, cfg.store)
    try:
        offsets = ConsumerOffsets(b.data_dir)
        epochs = EpochFile(b.data_dir, store.commitlog.max_offset)
        broker = ReplicaBroker(cfg, store, offsets, epochs)
        server, health = build_server(
            cfg.server.max_workers, cfg.server.max_concurrent_rpcs, cfg.server.max_message_bytes
        )
        broker_pb2_grpc.add_BrokerServicer_to_server(BrokerService(broker), server)
        replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicationService(broker), server)
        try:
            port = server.add_insecure_port(b.listen)
        except RuntimeError as exc:
            raise ConfigError("broker.listen", f"cannot listen on {b.listen}: {exc}") from exc
        if port == 0:
            raise ConfigError("broker.listen", f"cannot listen on {b.listen}")
        broker.address = f"{host}:{port}"
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        server.start()
        broker.start()
        scheduler = Scheduler(broker)  # retries of failed messages (acts while leading)
        scheduler.start()
        metrics_address = ""
        if cfg.server.metrics_listen:
            mhost, mport = parse_address(cfg.server.metrics_listen, "server.metrics_listen")
            metrics_address = f"{mhost}:{broker.metrics.serve(mhost, mport)}"
        set_serving(health, True)
        log.info(
            "serving %s as %s id %d on %s%s",
            b.broker_name,
            broker.role,
            b.broker_id,
            broker.address,
            f" (the controller at {b.controller} decides the role)" if b.controller else "",
        )
        if ready_file is not None:
            write_ready_file(
                ready_file,
                {
                    "address": broker.address,
                    "pid": os.getpid(),
                    "role": b.role,
                    "broker_name": b.broker_name,
                    "broker_id": b.broker_id,
                    "cluster": b.cluster,
                    "data_dir": str(b.data_dir),
                    "metrics_address": metrics_address,
                },
            )
        registrar = None
        if b.nameservers:
            registrar = Registrar(b.nameservers, b.heartbeat_ms, broker.registration)
        link = None
        if b.controller:
            link = ControllerLink(b.controller, b.controller_heartbeat_ms, broker)
        if registrar is not None or link is not None:
            broker.on_role_change = _announcer(registrar, link)
        if link is not None:
            link.start()
        if registrar is not None:
            registrar.start()
        stop.wait()
        log.info("stopping: refusing new calls, finishing calls in flight")
        scheduler.close()
        if link is not None:
            link.close()
        if registrar is not None:
            registrar.close(unregister=True)
        set_serving(health, False)
        stopped = server.stop(cfg.server.grace_ms / 1000)
        broker.close()  # held pulls return now instead of at their deadline
        stopped.wait()
    finally:
        store.close()
    log.info("stopped cleanly")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        for key, default, doc in documented_keys():
            print(f"{key} = {default!r}  # {doc}")
        return 0
    try:
        cfg = load_broker_config(args.config, overrides_from(args))
    except ConfigError as exc:
        print(f"tailrace broker: bad config: {exc}", flush=True)
        return 2
    setup_logging(f"{cfg.broker.broker_name}/{cfg.broker.broker_id}", args.log_level, args.log_file)
    try:
        return serve(cfg, args.ready_file)
    except TailraceError as exc:
        log.error("cannot start: %s", exc)
        return 2
