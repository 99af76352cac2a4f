"""Generate the gRPC/protobuf Python code in core/pb from proto/, and the
RocketMQ 5 protocol's code from the official client's descriptors.

    python -m deploy.protogen            # regenerate in place
    python -m deploy.protogen --check    # fail if the committed code differs

protoc's Python output imports sibling modules by their proto path
(`from tailrace.v1 import broker_pb2`); that is rewritten to the package the
code lives in (`core.pb.tailrace.v1`), because the import package may not be
called `proto` and should not be a bare `tailrace` either.

`apache.rocketmq.v2` (core/pb/rocketmq/v2) is not made from copied .proto
files: the serialized FileDescriptorProtos are taken out of the installed
`rocketmq-python-client` (its `rocketmq/grpc_protocol/*_pb2.py`, read with
`ast`, never imported: importing `rocketmq` sets up its logging and needs
opentelemetry) and given to the same protoc with `--descriptor_set_in`. The
files keep their original names (`definition.proto`, `service.proto`), so
the official package and ours register identical files and can share a
process (renamed ones clash: "duplicate symbol"). Their bare imports
(`import definition_pb2 as ...`) are rewritten to `core.pb.rocketmq.v2`.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "core" / "pb"
PACKAGE = "core.pb"
RMQ_DIR = ("rocketmq", "v2")  # under OUT_DIR
RMQ_CLIENT = "rocketmq-python-client==5.1.2"  # the descriptors' source (pyproject.toml's test extra)
RMQ_FILES = ("definition", "service")  # dependency order


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
        if path.relative_to(out_dir).parts[0] == RMQ_DIR[0]:
            continue  # generate_rocketmq's
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


def rocketmq_pb_dir() -> Path:
    """`rocketmq/grpc_protocol` of the installed official client, found
    without running its `__init__` (a top-level find_spec does not)."""
    spec = importlib.util.find_spec("rocketmq")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{RMQ_CLIENT} is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "grpc_protocol"


def serialized_file(path: Path) -> bytes:
    """The bytes literal a generated `*_pb2.py` passes to `AddSerializedFile`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, bytes):
                return arg.value
    raise RuntimeError(f"no serialized descriptor in {path}")


def rocketmq_descriptor_set(pb_dir: Path) -> bytes:
    """A FileDescriptorSet of the official definition.proto and service.proto
    with the well-known types they import."""
    from google.protobuf import descriptor_pb2, duration_pb2, timestamp_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    for dep in (duration_pb2, timestamp_pb2):
        dep.DESCRIPTOR.CopyToProto(fds.file.add())
    for name in RMQ_FILES:
        fds.file.add().MergeFromString(serialized_file(pb_dir / f"{name}_pb2.py"))
    return bytes(fds.SerializeToString())


def generate_rocketmq(out_dir: Path) -> list[Path]:
    """Write core/pb/rocketmq/v2's modules under `out_dir` (the `core/pb` root)."""
    from grpc_tools import protoc

    target = out_dir.joinpath(*RMQ_DIR)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        desc = Path(tmp) / "rocketmq.pb"
        desc.write_bytes(rocketmq_descriptor_set(rocketmq_pb_dir()))
        args = [
            "protoc",
            f"--descriptor_set_in={desc}",
            f"--python_out={target}",
            f"--pyi_out={target}",
            f"--grpc_python_out={target}",
            *(f"{n}.proto" for n in RMQ_FILES),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on the rocketmq descriptors")
    package = ".".join((PACKAGE, *RMQ_DIR))
    bare = "|".join(RMQ_FILES)
    written: list[Path] = []
    for path in sorted(target.glob("*_pb2*.py*")):
        text = path.read_text()
        path.write_text(
            re.sub(rf"^import ({bare})_pb2 as", rf"from {package} import \1_pb2 as", text, flags=re.M)
        )
        written.append(path)
    d = target
    while d != out_dir.parent:
        (d / "__init__.py").touch()
        d = d.parent
    return written


def generate_all(out_dir: Path) -> list[Path]:
    return generate(out_dir) + generate_rocketmq(out_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.protogen")
    p.add_argument("--check", action="store_true", help="compare with the committed code")
    args = p.parse_args(argv)
    if not args.check:
        for f in generate_all(OUT_DIR):
            print(f.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_all(Path(tmp) / "pb")
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
