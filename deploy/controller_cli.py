"""`tailrace controller migrate`: copy a stopped file controller's state into
etcd (nameserver/migrate.py says what is refused and why)."""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path

from core.errors import ConfigError
from nameserver.controller_store import STATE_FILE, FileStore, running_pid


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="controller_command", required=True)
    m = sub.add_parser("migrate", help="copy controller.json's epochs into etcd (file controller stopped)")
    m.add_argument("--from", dest="source", type=Path, required=True, help="the controller's data_dir")
    m.add_argument("--etcd", required=True, help="comma-separated http(s)://HOST:PORT")
    m.add_argument("--cluster", default="DefaultCluster", help="names the default prefix")
    m.add_argument("--prefix", default="", help="default /tailrace/<cluster>/controller/")
    m.add_argument("--ca-file", default="", help="https: etcd's CA")
    m.add_argument("--cert-file", default="", help="https: a client certificate etcd accepts")
    m.add_argument("--key-file", default="")
    m.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from core.etcd.client import EtcdClient
    from nameserver.etcd_store import EtcdStore, default_prefix
    from nameserver.migrate import migrate

    if not (args.source / STATE_FILE).is_file():
        raise ConfigError("--from", f"no {STATE_FILE} in {args.source}")
    pid = running_pid(args.source)
    if pid is not None:
        raise ConfigError("--from", f"a controller (pid {pid}) still runs on {args.source}: stop it first")
    if (args.cert_file or args.key_file) and not args.ca_file:
        raise ConfigError("--cert-file", "needs --ca-file (https)")
    groups = {n: rec for n, (rec, _) in FileStore(args.source, own=False).load().items()}
    ctx = None
    if args.ca_file:
        ctx = ssl.create_default_context(cafile=args.ca_file)
        if args.cert_file:
            ctx.load_cert_chain(args.cert_file, args.key_file or None)
    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
    kv = EtcdClient(endpoints, timeout_s=5.0, ssl_context=ctx)
    try:
        report = migrate(groups, EtcdStore(kv, args.prefix or default_prefix(args.cluster)))
    finally:
        kv.close()
    if args.json:
        print(json.dumps({"copied": report.copied, "already": report.already, "epochs": report.epochs}))
    else:
        for name in sorted(report.epochs):
            how = "copied" if name in report.copied else "already in etcd"
            print(f"{name}: epoch {report.epochs[name]} ({how})")
        print(f"migrated {len(report.copied)} groups ({len(report.already)} already there)")
    return 0
