"""One error root for every Tailrace failure.

Expected outcomes (a pull that finds nothing, an offset below the minimum) are
statuses, not exceptions. Exceptions are failures; each class says whether a
retry can help (`retriable`) and whether the caller should refresh its route
first (`refresh_route`). `for_code()` maps a wire code back to its class, the
way aiokafka does, so clients and servers share one table.
"""

from __future__ import annotations

from typing import ClassVar


def brief(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: bad input is named in an
    error, never echoed whole (a status detail has to fit gRPC's metadata)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class TailraceError(Exception):
    """Root of all Tailrace failures."""

    code: ClassVar[str] = "INTERNAL"
    retriable: ClassVar[bool] = False
    refresh_route: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgumentError(TailraceError):
    """Bad input from a caller; nothing was stored."""

    code = "INVALID_ARGUMENT"


class InvalidTopicError(InvalidArgumentError):
    code = "INVALID_TOPIC"


class UnknownTopicError(TailraceError):
    code = "UNKNOWN_TOPIC"
    refresh_route = True


class InvalidQueueError(InvalidArgumentError):
    code = "INVALID_QUEUE"


class InvalidOffsetError(InvalidArgumentError):
    code = "INVALID_OFFSET"


class MessageTooLargeError(InvalidArgumentError):
    code = "MESSAGE_TOO_LARGE"


class ConfigError(TailraceError):
    """A configuration value is wrong; names the key and the reason."""

    code = "CONFIG"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class CorruptRecordError(TailraceError):
    """Bytes that claim to be a record fail a bounds, magic or CRC check."""

    code = "CORRUPT_RECORD"


class StoreLockedError(TailraceError):
    """Another process holds the data directory."""

    code = "STORE_LOCKED"


class StoreClosedError(TailraceError):
    """The broker is shutting down; nothing was stored."""

    code = "STORE_CLOSED"
    retriable = True
    refresh_route = True


class NotMasterError(TailraceError):
    """A write sent to a broker that does not lead; `master_address` names the
    master when the broker knows it (it travels in the trailing metadata)."""

    code = "NOT_MASTER"
    refresh_route = True
    retriable = True

    def __init__(self, message: str = "", master_address: str = "") -> None:
        super().__init__(message)
        self.master_address = master_address


class NotControllerError(TailraceError):
    """A controller call reached a nameserver whose controller does not lead
    (a standby), or that runs none. `leader_address` names the leading
    controller's member address when the standby knows it ("": unknown, or
    no controller here); it travels in the trailing metadata. Retriable: a
    standby's refusal is an expected answer, and the leader (or this one,
    once it leads) takes the same call."""

    code = "NOT_CONTROLLER"
    retriable = True

    def __init__(self, message: str = "", leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_address = leader_address


class LeaseExpiredError(TailraceError):
    """A write reached a master whose lease lapsed: it still leads its epoch
    as far as it knows, but no controller renewed the lease in time (every
    controller unreachable, e.g. etcd's quorum lost, or this broker cut off
    from them). Nothing was stored; it writes again, as the same master, once
    a controller renews the lease. (`NOT_MASTER` is a broker that was
    demoted or never led.)

    Retriable: the same master resumes after a renewal, so producers keep
    trying until their send timeout. `refresh_route` too: the broker cannot
    tell a lost controller quorum from being cut off alone, and in the
    second case another broker may lead by now; the route shows it, and
    when it does not, the retry reaches this master again."""

    code = "MASTER_LEASE_EXPIRED"
    retriable = True
    refresh_route = True


class OutcomeUnknownError(TailraceError):
    """A send failed in a way that may have stored it (the connection died
    mid-call, or it was stored but not acknowledged): retrying may duplicate."""

    code = "OUTCOME_UNKNOWN"


class BrokerBusyError(TailraceError):
    """The broker refused the call (over its concurrent-call limit); nothing was stored."""

    code = "BROKER_BUSY"
    retriable = True


class FlushTimeoutError(TailraceError):
    """Sync flush did not complete in time.

    The records were written to the page cache (they are in the log and will be
    readable) but their durability was not confirmed; `offsets` says where.
    """

    code = "FLUSH_DISK_TIMEOUT"
    retriable = True

    def __init__(self, message: str, offsets: list[tuple[int, int]]) -> None:
        super().__init__(message)
        self.offsets = offsets


class BrokerUnavailableError(TailraceError):
    """The broker could not be reached or went away mid-call."""

    code = "BROKER_UNAVAILABLE"
    retriable = True
    refresh_route = True


class RequestTimeoutError(TailraceError):
    """The call's deadline passed; its outcome is unknown."""

    code = "REQUEST_TIMEOUT"
    retriable = True


class ReplicationError(TailraceError):
    """A replication peer broke the protocol; the stream is closed, nothing changed."""

    code = "REPLICATION"


class ReplicationDeniedError(ReplicationError):
    """A replica was refused: wrong or missing cluster secret."""

    code = "REPLICATION_DENIED"


class UnauthenticatedError(TailraceError):
    """The caller could not be identified: no credentials, an unknown access
    key, a bad signature, a timestamp outside the allowed skew, or no member
    certificate where one is required. Nothing was done."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(TailraceError):
    """The caller is known but may not do this. Nothing was done."""

    code = "PERMISSION_DENIED"


class QuotaExceededError(TailraceError):
    """A configured limit (`[quotas]`, or a store limit) would be passed: the
    message names it. Nothing was done; retrying the same call does not help."""

    code = "QUOTA_EXCEEDED"


class MessageNotFoundError(TailraceError):
    """No message at the place an id names (retention removed it, or the id
    was never one of this broker group's)."""

    code = "MESSAGE_NOT_FOUND"


class GroupActiveError(TailraceError):
    """An admin change of a consumer group (an offset reset) refused while
    the group has live members on the topic: they would commit over it."""

    code = "GROUP_ACTIVE"


class InvalidReceiptError(TailraceError):
    """A pop receipt handle that names no live hand-out: acked already, handed
    out again since (an older generation), altered or forged. Nothing was done."""

    code = "INVALID_RECEIPT_HANDLE"


class InvalidTransactionError(TailraceError):
    """A transaction id that names no open half of this broker group:
    altered, forged, another group's, or of a transaction ended otherwise
    (or forgotten). Nothing was done."""

    code = "INVALID_TRANSACTION_ID"


class StorageFullError(TailraceError):
    code = "STORAGE_FULL"
    retriable = True


class DiskFullError(StorageFullError):
    """The data disk is past its high watermark (`store.disk_max_used_ratio`):
    sends are refused, nothing was stored; they are taken again once space
    returns (retention by age, or the operator)."""

    code = "DISK_FULL"


_BY_CODE: dict[str, type[TailraceError]] = {}  # filled below from the subclass tree


def _register(cls: type[TailraceError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(TailraceError)


def for_code(code: str) -> type[TailraceError]:
    """The error class for a wire code; unknown codes map to the root."""
    return _BY_CODE.get(code, TailraceError)
