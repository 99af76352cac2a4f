"""What an etcd call can fail with, and whether a retry is safe.

- `EtcdError`: etcd answered an error (`code` is the gRPC status code,
  `message` etcd's text); retrying the same request gets the same answer.
- `EtcdUnavailable`: no endpoint answered, or every one that did said it
  could not serve (gRPC UNAVAILABLE); nothing was applied, a retry is safe.
- `EtcdOutcomeUnknown`: a write was sent and no answer came (a timeout, a
  connection lost after sending, or etcd's own "request timed out"): it may
  or may not have been applied. The caller re-reads before deciding; the
  client never retries it.
"""

from __future__ import annotations

# gRPC status codes etcd answers with (the gateway passes them through).
OK = 0
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
FAILED_PRECONDITION = 9
OUT_OF_RANGE = 11
UNAVAILABLE = 14

# etcd's UNAVAILABLE answers after which a write may still be applied (its
# proposal was in raft when the wait gave up); the others ("no leader", "not
# capable", "too many requests") refuse the write before proposing it.
_MAYBE_APPLIED = ("request timed out", "leader changed", "server stopped")


class EtcdError(Exception):
    """etcd answered an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class EtcdUnavailable(EtcdError):
    """No endpoint answered (nothing was applied: safe to retry)."""

    def __init__(self, message: str, code: int = UNAVAILABLE) -> None:
        super().__init__(code, message)


class EtcdOutcomeUnknown(EtcdUnavailable):
    """A write was sent and no answer came: it may or may not be applied."""


def maybe_applied(error: EtcdError) -> bool:
    """Whether a write etcd answered with `error` may still have been applied."""
    return error.code in (UNAVAILABLE, DEADLINE_EXCEEDED) and any(m in error.message for m in _MAYBE_APPLIED)
