"""PushConsumer against a real broker process: parallel processing that
scales with threads, commits that never skip across a SIGKILL of the
consumer process, memory bounded by flow control. What both engines
(threads and asyncio) must do alike is in test_push_clients.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from consumer import Admin, PushConsumer, ReceivedMessage
from deploy.client_cli import parse_body
from deploy.harness import ProcessGroup
from deploy.waits import poll_until
from tests.helpers.cli import ROOT, cli, cli_json, read_jsonl

pytestmark = pytest.mark.integration


def broker_with(procs: ProcessGroup, count: int, size: int = 256, queues: int = 8) -> str:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("t", queues)
    r = cli("produce", "--broker", b.address, "--topic", "t", "--count", str(count), "--batch", "100",
            "--size", str(size), "--log", str(Path(str(b.workdir)) / "produced.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return b.address


def test_throughput_grows_with_threads(procs: ProcessGroup) -> None:
    address = broker_with(procs, 6000)
    rates = {}
    for threads in (1, 16):
        out = cli_json("consume", "--broker", address, "--group", f"g{threads}", "--topic", "t",
                       "--count", "1500", "--threads", str(threads), "--handler-ms", "2")  # fmt: skip
        assert out["unique"] >= 1500
        rates[threads] = out["msgs_per_s"]
    print(rates)
    assert rates[16] >= 6 * rates[1]  # 2 ms per message: 1 thread ~500/s


def test_sigkill_mid_run_skips_nothing(procs: ProcessGroup, tmp_path: Path) -> None:
    address = broker_with(procs, 8000)
    produced = {int(e["seq"]) for e in read_jsonl(Path(str(procs.processes["b"].workdir)) / "produced.jsonl")}
    log1 = tmp_path / "c1.jsonl"
    args = ["consume", "--broker", address, "--group", "crash", "--topic", "t", "--count", "8000",
            "--threads", "8", "--handler-ms", "1", "--timeout-ms", "60000"]  # fmt: skip
    with open(tmp_path / "c1.out", "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args, "--log", str(log1)], cwd=ROOT,
                             stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def under_way() -> bool:
            text = log1.read_text() if log1.exists() else ""
            return text.count('"commit"') >= 3 and text.count('"seq"') >= 2000

        poll_until(under_way, 60, "a run under way")
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    first = read_jsonl(log1)
    last_commit: dict[int, int] = {}
    for e in first:
        if "commit" in e:
            last_commit[int(e["queue"])] = int(e["commit"])
    # the restart (here in-process): a new member of the same group
    second: list[tuple[int, int, int]] = []  # (queue, offset, seq)
    lock = threading.Lock()

    def record(batch: list[ReceivedMessage]) -> None:
        with lock:
            for m in batch:
                ident = parse_body(m.body)
                assert ident is not None
                second.append((m.queue_id, m.queue_offset, ident[1]))

    first_seqs = {int(e["seq"]) for e in first if "seq" in e}
    c = PushConsumer("crash", "t", record, broker=address, consume_threads=8)
    try:
        poll_until(lambda: first_seqs | {x[2] for x in list(second)} >= produced, 60, "the rest consumed")
    finally:
        c.close()
    assert first_seqs | {x[2] for x in second} == produced  # nothing skipped
    # the restart begins at the committed offsets: what repeats is after the last commit
    for queue_id, offset, _ in second:
        assert offset >= last_commit.get(queue_id, 0), (queue_id, offset, last_commit)
    redelivered = first_seqs & {x[2] for x in second}
    assert len(first_seqs) >= 2000 and len(second) < len(produced)
    print(f"first run: {len(first_seqs)} processed; redelivered after the kill: {len(redelivered)}")


def test_flow_control_bounds_memory(procs: ProcessGroup) -> None:
    address = broker_with(procs, 60_000, size=1024)  # ~60 MiB of backlog
    common = ["consume", "--broker", address, "--topic", "t", "--count", "60000", "--threads", "2",
              "--handler-ms", "5", "--timeout-ms", "4000", "--batch", "256"]  # fmt: skip
    bounded = cli_json(*common, "--group", "bounded", "--max-cached", "64")
    unbounded = cli_json(
        *common, "--group", "unbounded", "--max-cached", "1000000", "--max-span", "100000000"
    )
    print(bounded, unbounded)
    assert bounded["cached_max"] <= 8 * (64 + 256)  # per queue: the limit plus one pull in flight
    assert unbounded["cached_max"] > 20_000  # without the bound the backlog piles up
    assert unbounded["rss_max_mb"] - bounded["rss_max_mb"] > 20  # and so does memory
