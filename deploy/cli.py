"""The `tailrace` command."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tailrace", description="Tailrace message broker")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    from bench import store_bench

    p = sub.add_parser("store-bench", help="benchmark the storage engine")
    store_bench.add_arguments(p)
    sub.add_parser("store-demo", help="kill -9 a writer, recover, benchmark", add_help=False)

    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "store-demo":
        from deploy import store_demo

        return store_demo.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return store_bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
