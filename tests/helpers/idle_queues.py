"""Many idle queues (issue 16, "cost per queue"): build them through the
store API, one tiny message each, and measure what they cost on disk and in
file descriptors.

The build checks its cost every `check_every` queues, so a store that
pre-allocates whole ConsumeQueue files (6 MB a queue) fails after a hundred
queues instead of filling the disk with 60 GB.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from core.record import Message, decode_record
from core.store import MessageStore

KiB = 1024
MiB = 1024 * KiB
# One 4 KiB data block per queue file plus the queue's directory block (and
# a share of its topic's): ext4 allocates whole blocks.
DISK_PER_QUEUE = 16 * KiB
TOPICS = 250
QUEUES_PER_TOPIC = 40  # 10,000 queues
OPEN_CQ_DEFAULT = 1024  # the default cap on mapped ConsumeQueues
FD_SLACK = 32  # segments, the lock, the checkpoint: what a store holds besides ConsumeQueues


def disk_bytes(directory: Path) -> int:
    """Bytes of the blocks really allocated under `directory` (files and
    directories): st_blocks, not st_size, so a sparse file counts what it uses."""
    total = os.lstat(directory).st_blocks * 512
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def open_fds(pid: int | None = None) -> int:
    return psutil.Process(pid).num_fds()


def topic_name(t: int) -> str:
    return f"idle{t:04d}"


def body_of(topic: str, queue: int) -> bytes:
    return f"{topic}/{queue}".encode()


def build(
    store: MessageStore,
    fd_base: int,
    topics: int = TOPICS,
    queues_per_topic: int = QUEUES_PER_TOPIC,
    check_every: int = 100,
    fd_allowance: int = OPEN_CQ_DEFAULT + FD_SLACK,
) -> None:
    """Create `topics` topics of `queues_per_topic` queues and append one tiny
    message to each queue (one append call per queue), checking disk and
    descriptors every `check_every` queues."""
    cq_dir = store.data_dir / "consumequeue"
    made = 0
    for t in range(topics):
        topic = topic_name(t)
        store.create_topic(topic, queues_per_topic)
        for q in range(queues_per_topic):
            store.append([Message(topic, q, body_of(topic, q))])
            made += 1
            if made % check_every == 0:
                used = disk_bytes(cq_dir)
                assert used <= made * DISK_PER_QUEUE, (
                    f"{made} queues take {used / MiB:.1f} MiB of ConsumeQueue blocks "
                    f"(bound {made * DISK_PER_QUEUE / MiB:.1f} MiB)"
                )
                fds = open_fds() - fd_base
                assert fds <= fd_allowance, f"{made} queues hold {fds} descriptors"


def check_reads(store: MessageStore, keys: list[tuple[str, int]]) -> None:
    """Each queue holds exactly its one message, read back right."""
    for topic, q in keys:
        assert store.queue_offsets(topic, q) == (0, 1), (topic, q)
        r = store.read(topic, q, 0, 8, 1 << 20)
        assert r.count == 1, (topic, q, r.status)
        rec = decode_record(r.data)
        assert (rec.topic, rec.queue_id, rec.queue_offset, rec.body) == (topic, q, 0, body_of(topic, q))


def sample_keys(topics: int = TOPICS, queues_per_topic: int = QUEUES_PER_TOPIC) -> list[tuple[str, int]]:
    """A spread of queues: first, last, and a stride through the rest."""
    keys = [
        (topic_name(t), q)
        for t in range(0, topics, 17)
        for q in (0, queues_per_topic - 1, t % queues_per_topic)
    ]
    keys.append((topic_name(topics - 1), queues_per_topic - 1))
    return sorted(set(keys))
