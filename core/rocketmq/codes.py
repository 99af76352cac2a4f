"""v2 statuses: the `Status` a response carries, and which v2 `Code` each
Tailrace error becomes.

Official clients read the status inside the response, not gRPC's: a
refusal is an OK gRPC call whose `status.code` says why (code 0 counts as
an illegal response). The producer re-sends on any code but
`TOO_MANY_REQUESTS`, so only failures a retry can cure should look
retriable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import (
    BrokerBusyError,
    BrokerUnavailableError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidReceiptError,
    InvalidTopicError,
    InvalidTransactionError,
    LeaseExpiredError,
    MessageTooLargeError,
    NotMasterError,
    OutcomeUnknownError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestTimeoutError,
    TailraceError,
    UnauthenticatedError,
    UnknownTopicError,
)
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.roles import SendStatus

if TYPE_CHECKING:
    from core.rocketmq.service import Stored

MAX_MESSAGE_CHARS = 1024  # a status message is a line in a client's log, not a dump

# most specific first: a class listed earlier wins over its base classes
_BY_ERROR: tuple[tuple[type[TailraceError], int], ...] = (
    (UnauthenticatedError, d.UNAUTHORIZED),
    (PermissionDeniedError, d.FORBIDDEN),
    (UnknownTopicError, d.TOPIC_NOT_FOUND),
    (InvalidTopicError, d.ILLEGAL_TOPIC),
    (MessageTooLargeError, d.PAYLOAD_TOO_LARGE),
    (InvalidReceiptError, d.INVALID_RECEIPT_HANDLE),
    (InvalidTransactionError, d.INVALID_TRANSACTION_ID),
    (InvalidArgumentError, d.BAD_REQUEST),
    (QuotaExceededError, d.TOO_MANY_REQUESTS),
    (BrokerBusyError, d.TOO_MANY_REQUESTS),
    (OutcomeUnknownError, d.PROXY_TIMEOUT),
    (RequestTimeoutError, d.PROXY_TIMEOUT),
    (FlushTimeoutError, d.MASTER_PERSISTENCE_TIMEOUT),
    (NotMasterError, d.HA_NOT_AVAILABLE),
    (LeaseExpiredError, d.HA_NOT_AVAILABLE),
    (BrokerUnavailableError, d.HA_NOT_AVAILABLE),
)

# a native send's status, when it is not plain success
SEND_CODES: dict[SendStatus, int] = {
    SendStatus.SEND_OK: d.OK,
    SendStatus.FLUSH_DISK_TIMEOUT: d.MASTER_PERSISTENCE_TIMEOUT,
    SendStatus.SLAVE_TIMEOUT: d.SLAVE_PERSISTENCE_TIMEOUT,
    SendStatus.SLAVE_NOT_AVAILABLE: d.HA_NOT_AVAILABLE,
    SendStatus.NOT_MASTER: d.HA_NOT_AVAILABLE,
    SendStatus.MASTER_LEASE_EXPIRED: d.HA_NOT_AVAILABLE,
}


class Refused(Exception):
    """A request answered with a v2 status other than OK (bad input, an
    unsupported feature): raised by the translation, turned into the
    response's status by the servicer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def code_for(err: TailraceError) -> int:
    for cls, code in _BY_ERROR:
        if isinstance(err, cls):
            return code
    return d.INTERNAL_SERVER_ERROR


def status(code: int = d.OK, message: str = "OK") -> d.Status:
    return d.Status(code=code, message=message[:MAX_MESSAGE_CHARS])  # type: ignore[arg-type]


def status_of(exc: Exception) -> d.Status:
    """The status of a refusal or a Tailrace error (anything else is internal)."""
    if isinstance(exc, Refused):
        return status(exc.code, exc.message)
    if isinstance(exc, TailraceError):
        return status(code_for(exc), str(exc))
    return status(d.INTERNAL_SERVER_ERROR, "internal error; see the proxy log")


def send_status(stored: Stored) -> d.Status:
    """One message's status in a SendMessage answer."""
    code = SEND_CODES.get(stored.status, d.INTERNAL_SERVER_ERROR)
    if code == d.OK:
        return status()
    return status(code, f"{stored.status} on {stored.broker_name}/{stored.queue_id}")


def roll_up(entries: list[d.Status]) -> d.Status:
    """A SendMessage answer's own status: the entries' one code, else MULTIPLE_RESULTS."""
    if len({e.code for e in entries}) == 1:
        return entries[0]
    return status(d.MULTIPLE_RESULTS, "the messages had different outcomes; see the entries")


def backend_status(err: TailraceError) -> d.Status:
    """The status of the cluster's error, for a client: its code with a
    generic text (the error's own names brokers and addresses). The cluster
    refusing the proxy's account (Unauthenticated, PermissionDenied) is not
    the client's fault and becomes INTERNAL_SERVER_ERROR."""
    if isinstance(err, UnauthenticatedError | PermissionDeniedError):
        return status(d.INTERNAL_SERVER_ERROR, "the proxy could not serve this call; see the proxy's log")
    code = code_for(err)
    return status(code, f"{d.Code.Name(code)} from the cluster (details in the proxy's log)")


def not_implemented(what: str) -> d.Status:
    return status(d.NOT_IMPLEMENTED, f"{what} is not implemented by this Tailrace proxy yet")
