"""Crash loop: a child appends with sync flush; we SIGKILL it at seeded random
moments and check, after every restart, that no acknowledged record is lost or
changed, no torn record is readable, and appends continue at the right offsets.

Rounds: TAILRACE_CRASH_ROUNDS (default 20); replay with TAILRACE_SEED.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from core.record import HEADER_SIZE, Message, decode_record, iter_records
from core.store import MessageStore
from deploy.waits import poll_until
from tests.helpers.crash_writer import CONFIG, QUEUES, TOPIC, body_for
from tests.helpers.store_tools import check_consistency

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Child:
    """The writer process, with its stdout collected by a thread."""

    def __init__(self, directory: Path, seed: int, first_seq: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.crash_writer",
                str(directory),
                str(seed),
                str(first_seq),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready: dict[str, object] | None = None
        self.acks: list[tuple[int, int, int, int, int]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY "):
                self.ready = json.loads(line[6:])
            elif line.startswith("ACK ") and line.endswith("\n"):
                seq, phys, q, qoff, crc = map(int, line.split()[1:])
                with self._lock:
                    self.acks.append((seq, phys, q, qoff, crc))

    def ack_count(self) -> int:
        with self._lock:
            return len(self.acks)

    def wait_acks(self, n: int, timeout_s: float = 30.0) -> None:
        def acked() -> bool:
            if self.ack_count() >= n:
                return True
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"writer exited with {self.proc.returncode}: {err}")
            return False

        poll_until(acked, timeout_s, f"the writer acknowledging {n} records", every_s=0.002)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)  # every line written before the kill is read
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def verify(store: MessageStore, acked: dict[int, tuple[int, int, int, int]]) -> None:
    clog = store.commitlog
    for seq, (phys, q, qoff, crc) in acked.items():
        raw = bytes(clog.record_at(phys))
        assert zlib.crc32(raw) == crc, f"acknowledged seq {seq} at {phys} changed"
        rec = decode_record(raw)
        assert (rec.topic, rec.queue_id, rec.queue_offset) == (TOPIC, q, qoff)
        assert rec.body == body_for(seq)
    check_consistency(store)  # every record valid, queues agree with the log
    for q in range(QUEUES):  # and everything a consumer can read decodes
        lo, hi = store.queue_offsets(TOPIC, q)
        off = lo
        while off < hi:
            r = store.read(TOPIC, q, off, 256, 1 << 22)
            assert r.count > 0
            assert len(list(iter_records(r.data))) == r.count
            off = r.next_queue_offset


def test_crash_loop(tmp_path: Path, seed: int) -> None:
    rounds = int(os.environ.get("TAILRACE_CRASH_ROUNDS", "20"))
    rng = random.Random(seed)
    directory = tmp_path / "store"
    acked: dict[int, tuple[int, int, int, int]] = {}
    child: Child | None = None
    unclean_child_starts = 0
    try:
        for rnd in range(rounds):
            child = Child(directory, rng.randrange(1 << 30), first_seq=rnd * 1_000_000)
            child.wait_acks(rng.randint(1, 150))
            child.kill()
            if child.ready is not None and not child.ready["clean"]:
                unclean_child_starts += 1
            for seq, phys, q, qoff, crc in child.acks:
                acked[seq] = (phys, q, qoff, crc)
            child = None
            if rnd % 2 == 1:
                continue  # leave the crashed store for the next child to recover
            store = MessageStore(directory, CONFIG)
            try:
                assert not store.recovery.clean
                verify(store, acked)
                # the next append lands at the end of the log (or at the next
                # segment when it does not fit beside the end marker's room)
                end = store.commitlog.max_offset
                seg = CONFIG.segment_bytes
                probe = Message(TOPIC, 0, b"probe")
                size = HEADER_SIZE + len(TOPIC) + len(probe.body)
                expected_phys = end if end % seg + size + 8 <= seg else end - end % seg + seg
                expected_q = store.queue_offsets(TOPIC, 0)[1]
                assert store.append([probe]) == [(expected_phys, expected_q)]
            finally:
                store.close()
        store = MessageStore(directory, CONFIG)
        try:
            verify(store, acked)
        finally:
            store.close()
    finally:
        if child is not None:
            child.kill()
    assert len(acked) >= rounds
    assert unclean_child_starts >= rounds // 2 - 1
    print(f"crash loop: {rounds} rounds, {len(acked)} acknowledged records verified")
