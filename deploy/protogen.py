"""Generate the gRPC/protobuf Python code in core/pb from proto/.

    python -m deploy.protogen            # regenerate in place
    python -m deploy.protogen --check    # fail if the committed code differs

protoc's Python output imports sibling modules by their proto path
(`from tailrace.v1 import broker_pb2`); that is rewritten to the package the
code lives in (`core.pb.tailrace.v1`), because the import package may not be
called `proto` and should not be a bare `tailrace` either.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "core" / "pb"
PACKAGE = "core.pb"


def generate(out_dir: Path) -> list[Path]:
    """Write generated modules under `out_dir`; return the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test extra only

    protos = sorted(PROTO_DIR.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written: list[Path] = []
    for path in sorted(out_dir.rglob("*_pb2*.py*")):
        text = path.read_text()
        fixed = re.sub(r"^from (tailrace(?:\.\w+)*) import", rf"from {PACKAGE}.\1 import", text, flags=re.M)
        path.write_text(fixed)
        written.append(path)
    for d in {p.parent for p in written} | {out_dir}:
        d_ = d
        while d_ != out_dir.parent:
            (d_ / "__init__.py").touch()
            d_ = d_.parent
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.protogen")
    p.add_argument("--check", action="store_true", help="compare with the committed code")
    args = p.parse_args(argv)
    if not args.check:
        for f in generate(OUT_DIR):
            print(f.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp) / "pb")
        bad = []
        for f in fresh:
            committed = OUT_DIR / f.relative_to(Path(tmp) / "pb")
            if not committed.exists() or not filecmp.cmp(f, committed, shallow=False):
                bad.append(str(committed.relative_to(ROOT)))
        if bad:
            print("generated code is stale: " + ", ".join(bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
