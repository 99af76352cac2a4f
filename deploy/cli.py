"""The `tailrace` command.

Its own subcommands (broker, nameserver, proxy, cluster, produce, consume, topic,
group, message, controller, drill, demo) are built in. Other packages add theirs through the
`tailrace.commands` entry-point group (the benchmarks do, in pyproject.toml),
so this package never imports them: each entry point, named after the
command, is a function that takes the subparsers, adds that command's parser
and sets its handler with `set_defaults(run=F)` (F gets the parsed
arguments) or `set_defaults(main=F)` (F parses the remaining arguments
itself). A command that cannot be loaded is reported on stderr and left out;
the others still work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeAlias

from core.errors import TailraceError

COMMANDS_GROUP = "tailrace.commands"
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Register: TypeAlias = Callable[[Subcommands], None]
QUIET = ("broker", "nameserver", "proxy", "produce", "consume", "topic")  # they set up their own logging


def _demo(argv: list[str]) -> int:
    from deploy import demo

    return demo.main(argv)


def _builtin(sub: Subcommands) -> None:
    from deploy import (
        admin_cli,
        broker_main,
        client_cli,
        cluster_cli,
        controller_cli,
        drill,
        nameserver_main,
        proxy_main,
    )

    table: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = [
        ("broker", "run a broker", broker_main.add_arguments, broker_main.run),
        ("nameserver", "run a nameserver", nameserver_main.add_arguments, nameserver_main.run),
        ("proxy", "serve RocketMQ 5 clients (gRPC v2)", proxy_main.add_arguments, proxy_main.run),
        ("cluster", "run a cluster of processes", cluster_cli.add_arguments, cluster_cli.run),
        ("produce", "send test messages", client_cli.add_produce_arguments, client_cli.run_produce),
        ("consume", "receive messages", client_cli.add_consume_arguments, client_cli.run_consume),
        ("topic", "create, list or describe topics", admin_cli.add_topic_arguments, admin_cli.run_topic),
        (
            "group",
            "consumer groups: lag, who reads what, offset resets",
            admin_cli.add_group_arguments,
            admin_cli.run_group,
        ),
        ("message", "a message by id or key", admin_cli.add_message_arguments, admin_cli.run_message),
        ("controller", "the failover controller's state", controller_cli.add_arguments, controller_cli.run),
        ("drill", "a failure drill on a real cluster, checked from logs", drill.add_arguments, drill.run),
    ]
    for name, text, add_arguments, run in table:
        p = sub.add_parser(name, help=text)
        add_arguments(p)
        p.set_defaults(run=run)
    p = sub.add_parser("demo", help="a broker, produce and consume through it", add_help=False)
    p.set_defaults(main=_demo)


def _plugins(sub: Subcommands) -> None:
    """Add the commands of the `tailrace.commands` entry points."""
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in sub.choices:
            print(f"tailrace: {ep.value} would replace the {ep.name!r} command; ignored", file=sys.stderr)
            continue
        try:
            register: Register = ep.load()
            register(sub)
        except Exception as exc:  # a broken plugin must not take the broker down with it
            print(f"tailrace: cannot load the {ep.name!r} command ({ep.value}): {exc!r}", file=sys.stderr)
            continue
        if ep.name not in sub.choices:
            print(f"tailrace: {ep.value} did not add the {ep.name!r} command", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tailrace", description="Tailrace message broker")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    _builtin(sub)
    _plugins(sub)

    args, rest = parser.parse_known_args(argv)
    if args.command not in QUIET:
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    own_main: Callable[[list[str]], int] | None = getattr(args, "main", None)
    if own_main is not None:  # it parses its own arguments
        return own_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except TailraceError as exc:
        print(f"tailrace {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
