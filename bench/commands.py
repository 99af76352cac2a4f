"""The benchmark commands of `tailrace`: `bench ...`, `store-bench`, `store-demo`.

`deploy/cli.py` finds them through the `tailrace.commands` entry points in
pyproject.toml (deploy never imports bench); each function here adds the
command it is registered under.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.cli import Subcommands


def register_bench(sub: Subcommands) -> None:
    from bench import (
        clients,
        failover,
        ha_drills,
        produce_consume,
        push_consumer,
        redirect_bench,
        replication,
        rocketmq_bench,
        security,
        signing,
    )

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    for name, module, help_text in (
        ("produce-consume", produce_consume, "one broker, one producer, one consumer"),
        ("replication", replication, "master + 1 slave"),
        ("failover", failover, "seeded kill-master drills in a row"),
        ("ha-drills", ha_drills, "the controller's drills, seeded; failover with etcd against the file"),
        ("push-consumer", push_consumer, "threads, handler cost, memory"),
        ("redirect", redirect_bench, "read redirection in memory cgroups, on vs off"),
        ("clients", clients, "threaded against asyncio clients; giving up on a dead broker"),
        ("signing", signing, "the cost of signed calls against bare ones (in-process loopback)"),
        (
            "rocketmq",
            rocketmq_bench,
            "the official RocketMQ 5 client over v2 vs native; cold v2 pops, redirect on vs off",
        ),
        ("security", security, "produce and consume with TLS and accounts against plaintext (sync slave)"),
    ):
        p = bench.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)


def register_store_bench(sub: Subcommands) -> None:
    from bench import store_bench

    p = sub.add_parser("store-bench", help="benchmark the storage engine")
    store_bench.add_arguments(p)
    p.set_defaults(run=store_bench.run)


def register_store_demo(sub: Subcommands) -> None:
    from bench import store_demo

    p = sub.add_parser("store-demo", help="kill -9 a writer, recover, benchmark", add_help=False)
    p.set_defaults(main=store_demo.main)
