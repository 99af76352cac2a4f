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
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from core.broker_config import BrokerConfig, documented_keys, load_broker_config
from core.errors import ConfigError, TailraceError
from core.fileutil import atomic_write
from deploy.broker_node import BrokerNode

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
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without [tls] and [auth] (anyone who reaches it owns it)",
    )


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
        "server.insecure": True if getattr(args, "insecure", False) else None,
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


def serve(cfg: BrokerConfig, ready_file: Path | None) -> int:
    b = cfg.broker
    node = BrokerNode(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        node.start()
        if ready_file is not None:
            write_ready_file(
                ready_file,
                {
                    "address": node.address,
                    "pid": os.getpid(),
                    "role": str(b.role),
                    "broker_name": b.broker_name,
                    "broker_id": b.broker_id,
                    "cluster": b.cluster,
                    "data_dir": str(b.data_dir),
                    "metrics_address": node.metrics_address,
                    "member_address": node.member_address,
                },
            )
        stop.wait()
        log.info("stopping: refusing new calls, finishing calls in flight")
    finally:
        node.stop()
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
    except TailraceError as exc:  # e.g. a damaged side file: it names the file and what to do
        log.error("cannot start: %s", exc)
        print(f"tailrace broker: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
