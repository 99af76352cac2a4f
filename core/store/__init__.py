"""The storage engine: CommitLog, ConsumeQueues, recovery, flush, retention."""

from core.store.config import StoreConfig
from core.store.reads import ReadResult, ReadStatus
from core.store.recovery import RecoveryReport
from core.store.store import MessageStore

__all__ = ["MessageStore", "ReadResult", "ReadStatus", "RecoveryReport", "StoreConfig"]
