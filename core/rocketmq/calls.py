"""What every v2 call shares: the time it has before its client's deadline,
and who the client is."""

from __future__ import annotations

import grpc

CLIENT_ID = "x-mq-client-id"  # the header every official client sends with each call
MARGIN_S = 0.2  # answered this long before the client's deadline
DEFAULT_TIMEOUT_S = 3.0  # a call without a deadline (official clients always set one)


def past_deadline(context: grpc.ServicerContext) -> bool:
    left = context.time_remaining()
    return left is not None and left <= MARGIN_S


def time_left(context: grpc.ServicerContext) -> float:
    """Seconds this call may still take (its deadline less the margin)."""
    left = context.time_remaining()
    if left is None or left > 3600:
        left = DEFAULT_TIMEOUT_S
    return float(max(0.05, left - MARGIN_S))


def client_id(context: grpc.ServicerContext) -> str:
    """The caller's client id (its `x-mq-client-id`; "" without one)."""
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""
