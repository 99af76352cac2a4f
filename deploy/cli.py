"""The `tailrace` command."""

from __future__ import annotations

import argparse
import logging
import sys

from core.errors import TailraceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tailrace", description="Tailrace message broker")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    from bench import store_bench
    from deploy import broker_main, client_cli, nameserver_main

    p = sub.add_parser("broker", help="run a broker")
    broker_main.add_arguments(p)
    nameserver_main.add_arguments(sub.add_parser("nameserver", help="run a nameserver"))
    from deploy import cluster

    cluster.add_arguments(sub.add_parser("cluster", help="run a cluster of processes"))
    client_cli.add_produce_arguments(sub.add_parser("produce", help="send test messages"))
    client_cli.add_consume_arguments(sub.add_parser("consume", help="receive messages"))
    client_cli.add_topic_arguments(sub.add_parser("topic", help="create or list topics"))
    from bench import produce_consume

    bench_p = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench_p.add_subparsers(dest="bench_command", required=True)
    produce_consume.add_arguments(
        bench_sub.add_parser("produce-consume", help="one broker, one producer, one consumer")
    )
    from bench import replication as replication_bench

    replication_bench.add_arguments(bench_sub.add_parser("replication", help="master + 1 slave"))
    from bench import failover as failover_bench

    failover_bench.add_arguments(bench_sub.add_parser("failover", help="seeded kill-master drills in a row"))
    from bench import push_consumer as push_bench

    push_bench.add_arguments(bench_sub.add_parser("push-consumer", help="threads, handler cost, memory"))
    from bench import redirect_bench

    redirect_bench.add_arguments(
        bench_sub.add_parser("redirect", help="read redirection in memory cgroups, on vs off")
    )
    from deploy import drill

    drill.add_arguments(sub.add_parser("drill", help="a failure drill on a real cluster, checked from logs"))
    p = sub.add_parser("store-bench", help="benchmark the storage engine")
    store_bench.add_arguments(p)
    sub.add_parser("store-demo", help="kill -9 a writer, recover, benchmark", add_help=False)
    sub.add_parser("demo", help="a broker, produce and consume through it", add_help=False)

    args, rest = parser.parse_known_args(argv)
    if args.command not in ("broker", "nameserver", "produce", "consume", "topic"):
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    if args.command == "store-demo":
        from deploy import store_demo

        return store_demo.main(rest)
    if args.command == "demo":
        from deploy import demo

        return demo.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {
        "broker": broker_main.run,
        "nameserver": nameserver_main.run,
        "cluster": cluster.run,
        "produce": client_cli.run_produce,
        "consume": client_cli.run_consume,
        "topic": client_cli.run_topic,
        "store-bench": store_bench.run,
        "drill": drill.run,
    }
    try:
        if args.command == "bench":
            if args.bench_command == "replication":
                return replication_bench.run(args)
            if args.bench_command == "failover":
                return failover_bench.run(args)
            if args.bench_command == "push-consumer":
                return push_bench.run(args)
            if args.bench_command == "redirect":
                return redirect_bench.run(args)
            return produce_consume.run(args)
        return commands[args.command](args)
    except TailraceError as exc:
        print(f"tailrace {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
