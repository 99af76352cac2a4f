"""`make demo`: a broker process, the CLI producing and consuming through it.

    tailrace demo [--dir DIR] [--count N]

Starts one master broker on a free port (data under DIR, default
./.tailrace/demo), creates a topic, produces N 1 KiB messages in batches with
`tailrace produce`, consumes them with `tailrace consume`, prints both
summaries and the broker's status, then stops the broker with SIGTERM.
Read redirection to slaves arrives with issues 5 and 6; until then this is
the single-broker path they build on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from consumer import Admin
from deploy.harness import process_group

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tailrace {args[0]} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailrace demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=Path(".tailrace/demo"))
    p.add_argument("--count", type=int, default=200_000)
    args = p.parse_args(argv)
    if args.dir.exists():
        shutil.rmtree(args.dir)
    with process_group(args.dir) as procs:
        b = procs.broker("broker-a", segment_bytes=256 * 1024 * 1024)
        print(f"== broker-a serving on {b.address} (pid {b.pid}, log {b.log_path})")
        with Admin(b.address) as admin:
            admin.create_topic("demo", 4)
        print(f"== tailrace produce --topic demo --count {args.count} --size 1024 --batch 256")
        produced = _cli(
            "produce", "--broker", b.address, "--topic", "demo", "--count", str(args.count),
            "--size", "1024", "--batch", "256", "--json",
        )  # fmt: skip
        print("   " + json.dumps(produced))
        print(f"== tailrace consume --group demo --topic demo --count {args.count}")
        consumed = _cli(
            "consume", "--broker", b.address, "--group", "demo", "--topic", "demo",
            "--count", str(args.count), "--json",
        )  # fmt: skip
        print("   " + json.dumps(consumed))
        with Admin(b.address) as admin:
            st = admin.status()
        print(
            f"== status: log {st['min_offset']:,}..{st['max_offset']:,}, flushed to "
            f"{st['flushed_offset']:,}, topics {st['details']['topics']}"
        )
        code = b.stop()
        print(f"== SIGTERM: broker exited with {code}")
    ok = produced["failed"] == 0 and consumed["unique"] == args.count
    print("== demo " + ("OK: every message produced was consumed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
