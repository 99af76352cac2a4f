"""The one table between Tailrace error codes and gRPC status codes.

Servers send a failure as a gRPC status plus the trailing metadata key
`tailrace-error-code`; clients map it back with `error_from_rpc`. When the
key is absent (the failure came from gRPC itself: a dead connection, a
deadline, a message over the transport limit), the gRPC status code alone
picks the class.
"""

from __future__ import annotations

import grpc

from core import errors as e

ERROR_CODE_KEY = "tailrace-error-code"
MASTER_ADDRESS_KEY = "tailrace-master-address"  # with NOT_MASTER: where the master is
CONTROLLER_LEADER_KEY = "tailrace-controller-leader"  # with NOT_CONTROLLER: the leading controller

# Tailrace code -> gRPC status, for servers.
TO_GRPC: dict[str, grpc.StatusCode] = {
    e.InvalidArgumentError.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidTopicError.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidQueueError.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidOffsetError.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.MessageTooLargeError.code: grpc.StatusCode.RESOURCE_EXHAUSTED,  # a size quota (issue 16)
    e.UnknownTopicError.code: grpc.StatusCode.NOT_FOUND,
    e.ConfigError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.StoreLockedError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.CorruptRecordError.code: grpc.StatusCode.DATA_LOSS,
    e.StoreClosedError.code: grpc.StatusCode.UNAVAILABLE,
    e.BrokerUnavailableError.code: grpc.StatusCode.UNAVAILABLE,
    e.RequestTimeoutError.code: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.FlushTimeoutError.code: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.StorageFullError.code: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.BrokerBusyError.code: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.NotMasterError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.NotControllerError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.LeaseExpiredError.code: grpc.StatusCode.UNAVAILABLE,  # transient: writes resume on a renewal
    e.OutcomeUnknownError.code: grpc.StatusCode.UNKNOWN,
    e.ReplicationError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.ReplicationDeniedError.code: grpc.StatusCode.PERMISSION_DENIED,
    e.UnauthenticatedError.code: grpc.StatusCode.UNAUTHENTICATED,
    e.QuotaExceededError.code: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InvalidReceiptError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.InvalidTransactionError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.GroupActiveError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.MessageNotFoundError.code: grpc.StatusCode.NOT_FOUND,
    e.DiskFullError.code: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.PermissionDeniedError.code: grpc.StatusCode.PERMISSION_DENIED,
    e.TailraceError.code: grpc.StatusCode.INTERNAL,
}

# gRPC status -> Tailrace class, for failures that carry no Tailrace code.
FROM_GRPC: dict[grpc.StatusCode, type[e.TailraceError]] = {
    grpc.StatusCode.UNAVAILABLE: e.BrokerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.RequestTimeoutError,
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: e.UnknownTopicError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.BrokerBusyError,  # or too large: see below
    grpc.StatusCode.DATA_LOSS: e.CorruptRecordError,
    grpc.StatusCode.CANCELLED: e.BrokerUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: e.UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: e.PermissionDeniedError,
}


def grpc_status_for(err: e.TailraceError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = getattr(cls, "code", None)
        if code in TO_GRPC:
            return TO_GRPC[code]
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError) -> e.TailraceError:
    """The TailraceError a failed call stands for."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    md: dict[str, str] = {}
    for item in trailing or ():
        pair: tuple[str, str | bytes] = tuple(item)  # type: ignore[arg-type,assignment]
        md[pair[0]] = str(pair[1])
    code = md.get(ERROR_CODE_KEY)
    master = md.get(MASTER_ADDRESS_KEY, "")
    leader = md.get(CONTROLLER_LEADER_KEY, "")
    details = exc.details() if hasattr(exc, "details") else str(exc)
    status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    cls = e.for_code(str(code)) if code is not None else FROM_GRPC.get(status, e.TailraceError)
    if cls is e.BrokerBusyError and "larger than max" in str(details):
        cls = e.MessageTooLargeError  # gRPC's own message size limit
    message = str(details or status)
    prefix = f"{cls.code}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if cls is e.ConfigError:
        return e.TailraceError(message)
    if cls is e.FlushTimeoutError:
        return e.FlushTimeoutError(message, [])
    if cls is e.NotMasterError:
        return e.NotMasterError(message, master)
    if cls is e.NotControllerError:
        return e.NotControllerError(message, leader)
    return cls(message)
