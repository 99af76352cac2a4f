"""The values of the etcd API: keys and results, compares and txn operations.

Plain frozen dataclasses shared by the real client (`client.py`) and the
in-memory stand-in (`fake.py`); nothing here touches the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CompareOp = Literal["=", "!=", ">", "<"]
CompareTarget = Literal["VALUE", "VERSION", "CREATE", "MOD", "LEASE"]
COMPARE_OPS: tuple[str, ...] = ("=", "!=", ">", "<")


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store's revision when the range was served (header.revision)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # one per op of the branch taken: get -> RangeResult, put -> None, delete -> deleted count
    responses: list[RangeResult | int | None] = field(default_factory=list)


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # a DELETE carries only the key and the deleting revision (mod_revision)


def prefix_end(key: bytes) -> bytes:
    """The range end that makes `key` a prefix (etcd's GetPrefixRangeEnd):
    the key with its last byte below 0xff incremented and what follows cut;
    b"\\0" (every key from `key` on) when there is no such byte."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes([key[i] + 1])
    return b"\0"


@dataclass(frozen=True)
class Compare:
    """One condition of a txn; build with the static methods."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise ValueError(f"compare op must be one of {COMPARE_OPS}, not {self.op!r}")

    @staticmethod
    def value(key: bytes, op: CompareOp, value: bytes) -> Compare:
        return Compare(key, "VALUE", op, value)

    @staticmethod
    def version(key: bytes, op: CompareOp, n: int) -> Compare:
        return Compare(key, "VERSION", op, n)

    @staticmethod
    def create_revision(key: bytes, op: CompareOp, n: int) -> Compare:
        return Compare(key, "CREATE", op, n)

    @staticmethod
    def mod_revision(key: bytes, op: CompareOp, n: int) -> Compare:
        return Compare(key, "MOD", op, n)

    @staticmethod
    def lease(key: bytes, op: CompareOp, n: int) -> Compare:
        return Compare(key, "LEASE", op, n)

    def holds(self, kv: KeyValue | None) -> bool:
        """etcd's rule: on a missing key a value compare fails and the
        numbers (version, revisions, lease) compare as 0."""
        if kv is None and self.target == "VALUE":
            return False
        kv = kv or KeyValue(self.key)
        actual: bytes | int = kv.value if self.target == "VALUE" else self._number(kv)
        want = self.operand
        if self.op == "=":
            return actual == want
        if self.op == "!=":
            return actual != want
        if isinstance(actual, bytes) and isinstance(want, bytes):
            return actual > want if self.op == ">" else actual < want
        if isinstance(actual, int) and isinstance(want, int):
            return actual > want if self.op == ">" else actual < want
        raise TypeError(f"compare of {self.target} against {type(want).__name__}")

    def _number(self, kv: KeyValue) -> int:
        if self.target == "VERSION":
            return kv.version
        if self.target == "CREATE":
            return kv.create_revision
        return kv.mod_revision if self.target == "MOD" else kv.lease


@dataclass(frozen=True)
class Op:
    """One operation of a txn branch; build with the static methods."""

    kind: Literal["get", "put", "delete"]
    key: bytes
    value: bytes = b""
    lease: int = 0
    prefix: bool = False

    @staticmethod
    def get(key: bytes, prefix: bool = False) -> Op:
        return Op("get", key, prefix=prefix)

    @staticmethod
    def put(key: bytes, value: bytes, lease: int = 0) -> Op:
        return Op("put", key, value, lease)

    @staticmethod
    def delete(key: bytes, prefix: bool = False) -> Op:
        return Op("delete", key, prefix=prefix)
