"""The cold part of `tailrace bench rocketmq`: what a cold v2 receiver makes
the master read, with the proxy's cold reads on and off (issue 18).

One cluster (a nameserver, a master, an async slave), master and slave in
memory cgroups of `limit-mib` each, below a `backlog-mib` backlog (each has
its own page cache on this one machine, as issue 6's `bench redirect`);
the master on core 0, the slave, the proxy and the receiver on core 1 (as
if another machine). The backlog is produced once. Then arms alternate
(on, off, on, off, ...: `runs` of each), each with a proxy of its own
(`proxy.cold_reads` true or false: the only difference) and a consumer
group of its own, so every arm reads the same records from the start of
each queue. Before each arm both cgroups' page caches are emptied
(`MemoryCgroup.drop_cache`: v1 memory.force_empty, v2 memory.reclaim), so
every arm starts from the same, cold, residency; the master's ConsumeQueue
residency is reported then (mincore).

Per arm: the master's disk reads (/proc/PID/io) while idle after the drop
(`idle-seconds`, no receiver), then an official SimpleConsumer receiving
for `warmup-seconds` + `seconds`; the master's reads and the messages it
handed out (Status `popped`) are taken per window. The warm-up window holds
the one-off ConsumeQueue read-around: the first touch of a cold queue's
ConsumeQueue faults at its cursor, and the kernel's mmap read-around
(read_ahead_kb, 8 MiB here; CQ files of 1 MiB or more are MADV_NORMAL)
reads the whole written part of that CQ file, a few MB per queue, whatever
the arm. The timed window is what the bodies cost per message.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from consumer import Producer
from core.store.mapped import resident_bytes
from deploy.cgroups import MemoryCgroup, process_read_bytes
from deploy.harness import ProcessGroup, TailraceProcess, process_group
from deploy.waits import broker_status, wait_caught_up

SEG = 64 * 1024 * 1024
TOPIC = "cold"


def _official(home: Path, driver: Path, spec: dict[str, Any], cpu: str) -> subprocess.Popen[str]:
    """The official client (bench/rmq_official.py) in its own process on `cpu`, started;
    `_finish` waits for its answer."""
    env = {k: v for k, v in os.environ.items() if k != "TAILRACE_PROFILE"}
    env.update(HOME=str(home), TZ="UTC")
    (home / "spec.json").write_text(json.dumps(spec) + "\n")
    with (
        open(home / "spec.json") as spec_in,
        open(home / "rx.out", "w") as out,
        open(home / "rx.err", "w") as err,
    ):
        return subprocess.Popen(
            ["taskset", "-c", cpu, sys.executable, str(driver)], stdin=spec_in, stdout=out, stderr=err,
            text=True, env=env, cwd=home,
        )  # fmt: skip


def _finish(proc: subprocess.Popen[str], home: Path, timeout_s: float) -> dict[str, Any]:
    if proc.wait(timeout_s) != 0:
        raise RuntimeError(f"the official client failed: {(home / 'rx.err').read_text()[-2000:]}")
    out: dict[str, Any] = json.loads((home / "rx.out").read_text().strip().splitlines()[-1])
    return out


def numbered(tag: str, i: int, size: int) -> bytes:
    """A body a receiver tells apart without a message id (our native sends carry none)."""
    return f"{tag}{i:016d}".encode()[:24].ljust(max(size, 24), b"x")


def _popped(m: TailraceProcess) -> int:
    p = broker_status(m)["details"].get("popped", {})
    return int(p.get("here", 0)) + int(p.get("elsewhere", 0))


def _cq_resident(m: TailraceProcess) -> tuple[int, int]:
    """(bytes of the topic's ConsumeQueue files in the page cache, the files' bytes) on the master."""
    files = sorted((m.workdir / "data" / "consumequeue" / TOPIC).rglob("*"))
    files = [f for f in files if f.is_file()]
    return sum(resident_bytes(f) for f in files), sum(f.stat().st_size for f in files)


def _mb(n: float) -> float:
    return round(n / 1e6, 2)


def _arm(
    procs: ProcessGroup, ns: str, m: TailraceProcess, s: TailraceProcess, cgs: list[MemoryCgroup],
    home: Path, driver: Path, args: argparse.Namespace, on: bool, run: int,
) -> dict[str, Any]:  # fmt: skip
    tag = f"{'on' if on else 'off'}-{run}"
    proxy = procs.proxy(
        [ns], name=f"proxy-{tag}", extra=["--set", f"proxy.cold_reads={'true' if on else 'false'}"],
        exec_prefix=["taskset", "-c", "1"],
    )  # fmt: skip
    try:
        dropped = [_mb(cg.drop_cache()) for cg in cgs]  # every arm starts from the same residency
        cq_resident, cq_bytes = _cq_resident(m)
        idle0 = process_read_bytes(m.pid)
        time.sleep(args.idle_seconds)
        m0, s0, p0 = process_read_bytes(m.pid), process_read_bytes(s.pid), _popped(m)
        spec = {
            "mode": "receive", "endpoints": proxy.info["endpoint"], "topic": TOPIC, "group": f"cold-{tag}",
            "count": 1 << 40, "seconds": args.warmup_seconds + args.seconds, "size": args.size,
        }  # fmt: skip
        rx_proc = _official(home, driver, spec, "1")
        time.sleep(args.warmup_seconds)
        mw, sw, pw = process_read_bytes(m.pid), process_read_bytes(s.pid), _popped(m)
        rx = _finish(rx_proc, home, args.warmup_seconds + args.seconds + 120)
        m1, s1, p1 = process_read_bytes(m.pid), process_read_bytes(s.pid), _popped(m)
        popped = broker_status(m)["details"].get("popped", {})
    finally:
        proxy.stop()
    cold_log = [line for line in proxy.log_tail().splitlines() if "cold reads: bodies" in line][-1:]
    timed_msgs = p1 - pw
    return {
        "arm": tag,
        "cache_dropped_mb": {"master": dropped[0], "slave": dropped[1]},
        "master_cq_resident_mb_at_start": _mb(cq_resident),
        "master_cq_files_mb": _mb(cq_bytes),  # allocated; the written part: `cq_entries_mb`
        "master_read_mb_idle": _mb(m0 - idle0),
        "warmup": {
            "seconds": args.warmup_seconds, "popped": pw - p0,
            "master_read_mb": _mb(mw - m0), "slave_read_mb": _mb(sw - s0),
        },
        "timed": {
            "seconds": args.seconds, "popped": timed_msgs, "msgs_per_s": round(timed_msgs / args.seconds),
            "master_read_mb": _mb(m1 - mw), "slave_read_mb": _mb(s1 - sw),
            "master_read_kb_per_msg": round((m1 - mw) / 1e3 / max(timed_msgs, 1), 3),
        },
        "received": rx,
        "master_popped_total": popped,
        "proxy_cold_reads": cold_log[0].split("deploy.proxy_backend: ")[-1] if cold_log else "",
    }  # fmt: skip


def _summary(arms: list[dict[str, Any]]) -> dict[str, Any]:
    def med(on: bool, *path: str) -> float:
        vals = []
        for a in arms:
            if a["arm"].startswith("on" if on else "off"):
                v: Any = a
                for k in path:
                    v = v[k]
                vals.append(float(v))
        return round(statistics.median(vals), 3) if vals else 0.0

    out: dict[str, Any] = {}
    for name, path in (
        ("warmup_master_read_mb", ("warmup", "master_read_mb")),
        ("timed_master_read_mb", ("timed", "master_read_mb")),
        ("timed_master_read_kb_per_msg", ("timed", "master_read_kb_per_msg")),
        ("timed_slave_read_mb", ("timed", "slave_read_mb")),
        ("timed_msgs_per_s", ("timed", "msgs_per_s")),
    ):
        out[name] = {"on": med(True, *path), "off": med(False, *path)}
    kb = out["timed_master_read_kb_per_msg"]
    out["timed_master_read_per_msg_on_over_off"] = round(kb["on"] / kb["off"], 4) if kb["off"] else None
    out["every_message_whole_and_once"] = all(
        a["received"]["whole"] == a["received"]["distinct"] and a["received"]["duplicates"] == 0
        and a["received"]["errors"] == 0 for a in arms
    )  # fmt: skip
    return out


def cold(root: Path, driver: Path, common: list[str], args: argparse.Namespace) -> dict[str, Any]:
    limit = args.limit_mib * 1024 * 1024
    cg_m = MemoryCgroup.create("tailrace-rmq-cold-m", limit)
    cg_s = MemoryCgroup.create("tailrace-rmq-cold-s", limit)
    if cg_m is None or cg_s is None:
        raise SystemExit("memory cgroups cannot be created here: run with --skip-cold")
    home = root / "home-cold"
    home.mkdir(parents=True)
    arms: list[dict[str, Any]] = []
    try:
        with process_group(root / "cold") as procs:
            c = procs.cluster(
                ("m",), slaves=1, extra=common, segment_bytes=SEG,
                exec_prefix=[*cg_m.exec_prefix, "taskset", "-c", "0"],
                slave_exec_prefix=[*cg_s.exec_prefix, "taskset", "-c", "1"], topic=TOPIC, queues=4,
            )  # fmt: skip
            (ns,) = c.namesrv
            m, (s,) = c.groups["m"].master, c.groups["m"].slaves
            per_batch = max(1, (256 * 1024) // args.size)
            batches = args.backlog_mib * 1024 * 1024 // (per_batch * args.size)
            with Producer(m.address, max_in_flight=4) as prod:
                futs = [
                    prod.send_batch_async(
                        TOPIC, [numbered("c-", b * per_batch + i, args.size) for i in range(per_batch)]
                    )
                    for b in range(batches)
                ]
                for f in futs:
                    f.result()
            wait_caught_up(m, [s], timeout_s=600)
            for run in range(args.runs):
                for on in (True, False):
                    arms.append(_arm(procs, ns, m, s, [cg_m, cg_s], home, driver, args, on, run + 1))
            advice = broker_status(m)["details"]["redirect"]["reasons"]
    finally:
        cg_m.remove()
        cg_s.remove()
    return {
        "backlog_mib": args.backlog_mib, "limit_mib": args.limit_mib, "runs_per_arm": args.runs,
        "messages": batches * per_batch, "cq_entries_mb": _mb(batches * per_batch * 20),
        "order": [a["arm"] for a in arms], "arms": arms, "master_advice_total": advice,
        "median": _summary(arms),
    }  # fmt: skip
