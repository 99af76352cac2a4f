"""Child process for the crash-loop test: appends with sync flush and reports
every acknowledged record on stdout until it is killed.

    python -m tests.helpers.crash_writer DIR SEED FIRST_SEQ

Lines: `READY <recovery report json>`, then per acknowledged message
`ACK seq phys queue_id queue_offset crc32(record bytes)`.
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from pathlib import Path

from core.record import Message
from core.store import MessageStore, StoreConfig

CONFIG = StoreConfig(
    segment_bytes=64 * 1024,
    max_message_bytes=8 * 1024,
    cq_entries_per_file=128,
    flush="sync",
    checkpoint_interval_ms=50,
    flush_interval_ms=20,
)
TOPIC = "crash"
QUEUES = 4


def body_for(seq: int) -> bytes:
    """Deterministic body of message `seq` (the parent recomputes it)."""
    filler = zlib.crc32(str(seq).encode()).to_bytes(4, "big") * (1 + seq % 300)
    return f"seq={seq};".encode() + filler


def main() -> None:
    directory, seed, first = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = MessageStore(directory, CONFIG)
    store.create_topic(TOPIC, QUEUES)
    out = sys.stdout
    out.write("READY " + json.dumps(store.recovery.to_dict()) + "\n")
    out.flush()
    seq = first
    while True:
        n = rng.randint(1, 8)
        q = rng.randrange(QUEUES)
        msgs = [Message(TOPIC, q, body_for(s), tags=f"t{s % 5}") for s in range(seq, seq + n)]
        res = store.append(msgs)
        lines = []
        for s, (phys, qoff) in zip(range(seq, seq + n), res, strict=True):
            crc = zlib.crc32(store.commitlog.record_at(phys))
            lines.append(f"ACK {s} {phys} {q} {qoff} {crc}\n")
        out.write("".join(lines))
        out.flush()
        seq += n


if __name__ == "__main__":
    main()
