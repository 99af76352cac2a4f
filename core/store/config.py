"""Storage settings (the `[store]` table of a broker config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.config import require
from core.record import BLANK_MIN, HEADER_SIZE

GiB = 1 << 30
MiB = 1 << 20
PAGE = 4096


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class StoreConfig:
    segment_bytes: int = field(
        default=GiB, metadata=_doc("CommitLog segment file size; fixed once a log exists")
    )
    warm_segments: bool = field(
        default=True, metadata=_doc("pre-fault every page of a new segment before use")
    )
    flush: Literal["async", "sync"] = field(
        default="async",
        metadata=_doc("async: fdatasync every flush_interval_ms; sync: group commit per append"),
    )
    flush_interval_ms: int = field(default=500, metadata=_doc("async flush period"))
    sync_flush_timeout_ms: int = field(
        default=5000, metadata=_doc("sync flush wait before FLUSH_DISK_TIMEOUT")
    )
    checkpoint_interval_ms: int = field(
        default=1000, metadata=_doc("how often the flushed offsets are checkpointed")
    )
    max_message_bytes: int = field(
        default=4 * MiB, metadata=_doc("largest encoded record (header + fields + body)")
    )
    cq_entries_per_file: int = field(
        default=300_000, metadata=_doc("ConsumeQueue entries per file (20 bytes each)")
    )
    cq_max_open: int = field(
        default=1024,
        metadata=_doc(
            "ConsumeQueues kept mapped at once (one descriptor per file); the least"
            " recently used idle one is unmapped first"
        ),
    )
    max_queues_per_topic: int = field(default=1024, metadata=_doc("upper bound on queue count"))
    max_batch_bytes: int = field(
        default=16 * MiB,
        metadata=_doc("largest send request (a batch); the gRPC receive limit sits just above it"),
    )
    max_properties: int = field(default=128, metadata=_doc("properties per message"))
    max_properties_bytes: int = field(
        default=32 * 1024, metadata=_doc("encoded bytes of a message's properties")
    )
    retention_hours: float = field(default=72.0, metadata=_doc("delete whole segments older than this"))
    disk_max_used_ratio: float = field(
        default=0.90,
        metadata=_doc("high watermark: sends are refused (DISK_FULL) while the disk is fuller than this"),
    )
    retention_deletes_unconsumed: bool = field(
        default=False,
        metadata=_doc("let retention by age delete segments a live consumer group has not read yet"),
    )
    retention_interval_ms: int = field(default=10_000, metadata=_doc("retention check period"))

    def validate(self, prefix: str = "store") -> None:
        k = f"{prefix}."
        require(self.segment_bytes % PAGE == 0, k + "segment_bytes", "must be a multiple of 4096")
        require(self.segment_bytes >= 64 * 1024, k + "segment_bytes", "must be at least 65536")
        require(
            self.max_message_bytes > HEADER_SIZE,
            k + "max_message_bytes",
            f"must be more than the {HEADER_SIZE}-byte header",
        )
        require(
            self.max_message_bytes + BLANK_MIN <= self.segment_bytes,
            k + "max_message_bytes",
            "must fit in one segment (segment_bytes - 8)",
        )
        require(self.flush_interval_ms > 0, k + "flush_interval_ms", "must be positive")
        require(self.sync_flush_timeout_ms > 0, k + "sync_flush_timeout_ms", "must be positive")
        require(self.checkpoint_interval_ms > 0, k + "checkpoint_interval_ms", "must be positive")
        require(self.cq_entries_per_file > 0, k + "cq_entries_per_file", "must be positive")
        require(self.cq_max_open > 0, k + "cq_max_open", "must be positive")
        require(
            0 < self.max_queues_per_topic <= 65536,
            k + "max_queues_per_topic",
            "must be in 1..65536",
        )
        require(self.retention_hours > 0, k + "retention_hours", "must be positive")
        require(
            self.max_message_bytes <= self.max_batch_bytes <= 512 * MiB,
            k + "max_batch_bytes",
            "must be at least max_message_bytes and at most 512 MiB",
        )
        require(0 <= self.max_properties <= 65535, k + "max_properties", "must be in 0..65535")
        require(self.max_properties_bytes >= 0, k + "max_properties_bytes", "must be >= 0")
        require(
            0 < self.disk_max_used_ratio <= 1.0,
            k + "disk_max_used_ratio",
            "must be in (0, 1]",
        )
        require(self.retention_interval_ms > 0, k + "retention_interval_ms", "must be positive")
