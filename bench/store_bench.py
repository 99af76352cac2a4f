"""Storage engine benchmark: append throughput and latency, hot and cold reads.

    tailrace store-bench --dir D --count N --size 1024 --batch K [--warm on|off|both] --json

Appends N records of `size` body bytes in batches of K (each batch to one
queue, queues in turn), counting the page faults the appending thread takes,
then reads every queue back from the page cache
(hot), then closes the store, evicts its files from the page cache
(posix_fadvise DONTNEED after unmapping, checked with mincore), reopens and
reads everything again (cold). With `--warm both` it alternates runs with
pre-warming on and off in one process (`--repeat`, medians) and reports the
ratios, so the figures compare like with like on the same machine.

On a VM, memory the host has taken back is ~13x slower on first touch than
memory just freed by this guest (MEASURED.md), so each run waits `--pause-s`
first: without the pause a run reuses the pages the previous run freed and
first-touch costs vanish from the comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.record import Message
from core.store import MessageStore, StoreConfig
from core.store.mapped import evict, resident_bytes

TOPIC = "bench"


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[idx]


def _store_files(directory: Path) -> list[Path]:
    return [
        p
        for sub in ("commitlog", "consumequeue")
        for p in (directory / sub).rglob("*")
        if p.is_file() and p.name.isdigit()
    ]


def _read_all(store: MessageStore, queues: int, max_count: int, max_bytes: int) -> tuple[int, int]:
    msgs = 0
    nbytes = 0
    for q in range(queues):
        lo, hi = store.queue_offsets(TOPIC, q)
        off = lo
        while off < hi:
            r = store.read(TOPIC, q, off, max_count, max_bytes)
            msgs += r.count
            nbytes += len(r.data)
            off = r.next_queue_offset
    return msgs, nbytes


def run_once(
    directory: Path,
    count: int,
    size: int,
    batch: int,
    queues: int,
    config: StoreConfig,
) -> dict[str, Any]:
    if directory.exists():
        shutil.rmtree(directory)
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    batches = [[Message(TOPIC, q, body, tags="bench")] * batch for q in range(queues)]
    store = MessageStore(directory, config)
    store.create_topic(TOPIC, queues)
    calls = (count + batch - 1) // batch
    lat: list[float] = []
    clock = time.perf_counter
    faults0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    t0 = clock()
    for i in range(calls):
        b = batches[i % queues]
        if i == calls - 1 and count % batch:
            b = b[: count % batch]
        t = clock()
        store.append(b)
        lat.append(clock() - t)
    elapsed = clock() - t0
    writer_faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults0
    written = store.commitlog.max_offset
    misses = store.commitlog.allocator.misses
    segments = len(store.commitlog.segments())

    t = clock()
    hot_msgs, _ = _read_all(store, queues, 32, 256 * 1024)
    hot_s = clock() - t
    store.close()

    files = _store_files(directory)
    for f in files:
        evict(f)
    total = sum(f.stat().st_size for f in files)
    resident = sum(resident_bytes(f) for f in files)

    t = clock()
    store = MessageStore(directory, config)
    reopen_s = clock() - t
    t = clock()
    cold_msgs, _ = _read_all(store, queues, 32, 256 * 1024)
    cold_s = clock() - t
    store.close()
    shutil.rmtree(directory)

    lat.sort()
    return {
        "warm_segments": config.warm_segments,
        "flush": config.flush,
        "count": count,
        "size": size,
        "batch": batch,
        "queues": queues,
        "cq_max_open": config.cq_max_open,
        "segment_bytes": config.segment_bytes,
        "segments_used": segments,
        "preallocation_misses": misses,
        "writer_page_faults": writer_faults,
        "appends_per_s": round(count / elapsed),
        "mb_per_s": round(written / elapsed / 1e6, 1),
        "p50_append_us": round(_percentile(lat, 50) * 1e6, 1),
        "p99_append_us": round(_percentile(lat, 99) * 1e6, 1),
        "max_append_us": round(lat[-1] * 1e6, 1),
        "read_hot_per_s": round(hot_msgs / hot_s),
        "read_cold_per_s": round(cold_msgs / cold_s),
        "reopen_ms": round(reopen_s * 1000, 1),
        "reopen_and_read_cold_per_s": round(cold_msgs / (reopen_s + cold_s)),
        "cold_resident_fraction_before_read": round(resident / total, 4) if total else 0.0,
        "messages_read": [hot_msgs, cold_msgs],
    }


_MEDIAN_KEYS = (
    "appends_per_s",
    "mb_per_s",
    "p50_append_us",
    "p99_append_us",
    "max_append_us",
    "read_hot_per_s",
    "read_cold_per_s",
    "reopen_ms",
    "reopen_and_read_cold_per_s",
    "cold_resident_fraction_before_read",
    "preallocation_misses",
    "writer_page_faults",
)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's fields, with each figure replaced by its median over `runs`."""
    out = dict(runs[0])
    for k in _MEDIAN_KEYS:
        out[k] = statistics.median(r[k] for r in runs)
    out["runs"] = len(runs)
    if len(runs) > 1:
        out["appends_per_s_each"] = [r["appends_per_s"] for r in runs]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, type=Path, help="scratch directory (wiped)")
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024, help="body bytes per record")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--queues", type=int, default=4)
    p.add_argument("--segment-bytes", type=int, default=StoreConfig().segment_bytes)
    p.add_argument("--flush", choices=["async", "sync"], default="async")
    p.add_argument(
        "--cq-max-open",
        type=int,
        default=StoreConfig().cq_max_open,
        help="ConsumeQueues kept mapped (below --queues, every batch maps one and unmaps another)",
    )
    p.add_argument("--warm", choices=["on", "off", "both"], default="on")
    p.add_argument(
        "--pause-s",
        type=float,
        default=5.0,
        help="idle pause before each run, so memory freed by the previous run goes back "
        "to the host and every run starts from the same first-touch state (default 5)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per setting, alternating on/off with --warm both; medians reported "
        "(default 3 with --warm both, else 1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    base = StoreConfig(
        segment_bytes=args.segment_bytes,
        flush=args.flush,
        cq_max_open=args.cq_max_open,
        max_message_bytes=min(StoreConfig().max_message_bytes, args.segment_bytes - 8),
    )
    base.validate()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.warm]
    repeat = args.repeat or (3 if len(modes) == 2 else 1)
    by_mode: dict[bool, list[dict[str, Any]]] = {w: [] for w in modes}
    for _ in range(repeat):  # alternate, so drifting machine state hits both alike
        for w in modes:
            if len(modes) * repeat > 1:
                time.sleep(args.pause_s)
            by_mode[w].append(
                run_once(
                    args.dir / f"warm-{'on' if w else 'off'}",
                    args.count,
                    args.size,
                    args.batch,
                    args.queues,
                    replace(base, warm_segments=w),
                )
            )
    runs = [_median_run(by_mode[w]) for w in modes]
    result: dict[str, Any] = dict(runs[0])
    if len(runs) == 2:
        on, off = runs
        result = {
            **on,
            "warm_off": off,
            "warm_on_vs_off_appends": round(on["appends_per_s"] / off["appends_per_s"], 2),
            "warm_on_vs_off_p99": round(on["p99_append_us"] / off["p99_append_us"], 2),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for r in runs:
            print(
                f"warm={'on ' if r['warm_segments'] else 'off'} "
                f"{r['appends_per_s']:>9,} appends/s {r['mb_per_s']:>7} MB/s "
                f"p99 {r['p99_append_us']:>8} us/batch  hot reads {r['read_hot_per_s']:>9,}/s "
                f"cold reads {r['read_cold_per_s']:>9,}/s "
                f"(resident before cold read {r['cold_resident_fraction_before_read']:.1%})"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailrace store-bench", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
