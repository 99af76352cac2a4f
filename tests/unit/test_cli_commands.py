"""How `tailrace` finds commands that live outside deploy/ (the benchmarks):
the `tailrace.commands` entry points, and deploy never importing bench."""

from __future__ import annotations

import argparse
import ast
import importlib
import tomllib
from pathlib import Path

import pytest

from deploy import cli

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][cli.COMMANDS_GROUP])


def test_the_declared_commands_register_what_they_are_named_after() -> None:
    commands = declared()
    assert {"bench", "store-bench", "store-demo"} <= set(commands)  # the README and the Makefile use them
    for name, target in commands.items():
        module, _, attr = target.partition(":")
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        getattr(importlib.import_module(module), attr)(sub)
        assert list(sub.choices) == [name], target


def test_bench_subcommands_parse_as_before() -> None:
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    importlib.import_module("bench.commands").register_bench(sub)
    args = sub.choices["bench"].parse_args(["replication", "--count", "5", "--json"])
    assert (args.bench_command, args.count, args.json) == ("replication", 5, True)
    assert args.run is importlib.import_module("bench.replication").run


def register_hello(sub: cli.Subcommands) -> None:
    p = sub.add_parser("hello")
    p.add_argument("--times", type=int, default=1)
    p.set_defaults(run=lambda args: 40 + args.times)


def register_raw(sub: cli.Subcommands) -> None:
    sub.add_parser("raw", add_help=False).set_defaults(main=lambda argv: len(argv))


def register_nothing(sub: cli.Subcommands) -> None:
    pass


def test_commands_come_from_entry_points_and_a_broken_one_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    here = __name__
    dist = tmp_path / "tailrace_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tailrace-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{cli.COMMANDS_GROUP}]\n"
        f"hello = {here}:register_hello\n"
        f"raw = {here}:register_raw\n"
        "broken = no_such_module_anywhere:register\n"
        f"broker = {here}:register_hello\n"  # may not replace a built-in command
        f"silent = {here}:register_nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kwargs: None)
    assert cli.main(["hello", "--times", "2"]) == 42
    assert cli.main(["raw", "a", "--b", "c"]) == 3  # it parses its own arguments
    err = capsys.readouterr().err
    assert "cannot load the 'broken' command" in err
    assert "would replace the 'broker' command" in err
    assert "did not add the 'silent' command" in err
    with pytest.raises(SystemExit):  # the built-ins are still there, unreplaced
        cli.main(["broker", "--times", "2"])


def test_deploy_never_imports_bench() -> None:
    """bench builds on deploy (the harness, the drills); the other way round
    would make the broker's package depend on its benchmarks."""
    offenders = []
    for path in sorted((ROOT / "deploy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "bench"]
    assert offenders == []
