"""`make demo` for the storage engine: a writer killed with SIGKILL mid-way,
recovery, verification, then the benchmark line.

    tailrace store-demo [--dir DIR] [--count 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench import store_bench
from core.record import Message, decode_record
from core.store import MessageStore, StoreConfig

TOPIC = "demo"
QUEUES = 4
BATCH = 100
CONFIG = StoreConfig(segment_bytes=16 * 1024 * 1024, flush="sync")


def _body(seq: int) -> bytes:
    return f"demo message {seq:08d} ".encode() * 20


def writer(directory: Path, first: int, count: int) -> None:
    """Append messages first..count-1 in batches; print each acknowledged batch."""
    store = MessageStore(directory, CONFIG)
    store.create_topic(TOPIC, QUEUES)
    for start in range(first, count, BATCH):
        seqs = range(start, min(count, start + BATCH))
        res = store.append([Message(TOPIC, s % QUEUES, _body(s), keys=str(s)) for s in seqs])
        crcs = [zlib.crc32(store.commitlog.record_at(p)) for p, _ in res]
        print(json.dumps({"acked": list(seqs), "at": [p for p, _ in res], "crc": crcs}), flush=True)
    store.close()


def _spawn(directory: Path, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.store_demo",
            "--writer",
            str(directory),
            str(first),
            str(count),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailrace store-demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--bench-count", type=int, default=300_000)
    p.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.writer:
        writer(Path(args.writer[0]), int(args.writer[1]), int(args.writer[2]))
        return 0

    root = args.dir or Path(tempfile.mkdtemp(prefix="tailrace-demo-"))
    data = root / "store"
    if data.exists():
        shutil.rmtree(data)
    count = args.count
    print(f"== writing {count:,} messages with sync flush into {data}")
    acked: dict[int, tuple[int, int]] = {}
    proc = _spawn(data, 0, count)
    assert proc.stdout is not None
    for line in proc.stdout:
        batch = json.loads(line)
        for s, at, crc in zip(batch["acked"], batch["at"], batch["crc"], strict=True):
            acked[s] = (at, crc)
        if len(acked) >= count // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    print(f"== killed the writer (SIGKILL) after {len(acked):,} acknowledged messages")

    t = time.monotonic()
    store = MessageStore(data, CONFIG)
    rep = store.recovery
    print(f"== recovery ({(time.monotonic() - t) * 1000:.0f} ms to open):")
    print(
        f"   clean stop: {rep.clean}; scanned {rep.records_scanned:,} records from offset "
        f"{rep.scanned_from}; log ends at {rep.end_offset:,}"
    )
    print(
        f"   re-dispatched {rep.records_redispatched:,} consume-queue entries; "
        f"cut: {rep.cut_at if rep.cut_at is not None else 'nothing'}"
        f"{f' ({rep.bytes_cut} bytes: {rep.cut_reason})' if rep.cut_at is not None else ''}"
    )
    missing = 0
    for _s, (at, crc) in acked.items():
        if zlib.crc32(store.commitlog.record_at(at)) != crc:
            missing += 1
    stored = sum(store.queue_offsets(TOPIC, q)[1] for q in range(QUEUES))
    last = max(acked)
    tail = decode_record(store.commitlog.record_at(acked[last][0]))
    print(
        f"   {len(acked) - missing:,}/{len(acked):,} acknowledged messages intact; "
        f"{stored:,} in the queues; last acknowledged: key {tail.keys}"
    )
    store.close()
    if missing:
        print("!! acknowledged messages were lost")
        return 1

    resume = stored
    proc = _spawn(data, resume, count)
    proc.communicate()
    with MessageStore(data, CONFIG) as store:
        total = sum(store.queue_offsets(TOPIC, q)[1] for q in range(QUEUES))
    print(f"== a new writer resumed at {resume:,} and finished: {total:,} messages stored")

    print(f"== benchmark: {args.bench_count:,} x 1 KiB in batches of 256, async flush, pre-warming on vs off")
    store_bench.main(
        [
            "--dir",
            str(root / "bench"),
            "--count",
            str(args.bench_count),
            "--size",
            "1024",
            "--batch",
            "256",
            "--warm",
            "both",
            "--segment-bytes",
            str(256 * 1024 * 1024),
        ]
    )
    if args.dir is None:
        shutil.rmtree(root)
    return 0 if total == count else 1


if __name__ == "__main__":
    sys.exit(main())
