"""An account's per-request signature.

Every call of an account carries, as gRPC metadata,

    x-tailrace-date: <unix time in ms>
    authorization:   TAILRACE-HMAC-SHA256 Credential=<access key>,
                     SignedHeaders=x-tailrace-date, Signature=<hex>

where Signature = HMAC-SHA256(secret key, "<method>\\n<date>") and
<method> is the full gRPC method path (`/tailrace.v1.Broker/Send`). The
secret key never travels. This is the shape of RocketMQ 5's `authorization`
header (`MQv2-HMAC-SHA1 Credential=..., SignedHeaders=x-mq-date-time,
Signature=...`), with two changes: the signature covers the call as well
as the time, so a header seen for one RPC does not authorize another, and
SHA-256. The server accepts a date within `skew_ms` of its own clock; that
window bounds the replay of a header that leaked (under TLS nobody else
sees it). The RocketMQ-protocol endpoint checks RocketMQ's own header
against the same accounts (same access and secret keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable

from core.errors import UnauthenticatedError
from core.security.identity import Account

AUTHORIZATION = "authorization"
DATE = "x-tailrace-date"
ALGORITHM = "TAILRACE-HMAC-SHA256"
_HEADER = re.compile(
    rf"{ALGORITHM} Credential=(?P<ak>[A-Za-z0-9_.\-]{{1,128}}), "
    rf"SignedHeaders={DATE}, Signature=(?P<sig>[0-9a-f]{{64}})"
)
DEFAULT_SKEW_MS = 5 * 60 * 1000


def signature(secret_key: str, method: str, date: str) -> str:
    return hmac.new(secret_key.encode(), f"{method}\n{date}".encode(), hashlib.sha256).hexdigest()


def sign(access_key: str, secret_key: str, method: str, now_ms: int) -> tuple[tuple[str, str], ...]:
    """The metadata that signs one call of `method` at `now_ms`."""
    date = str(now_ms)
    sig = signature(secret_key, method, date)
    header = f"{ALGORITHM} Credential={access_key}, SignedHeaders={DATE}, Signature={sig}"
    return ((DATE, date), (AUTHORIZATION, header))


def verify(
    metadata: Iterable[tuple[str, str | bytes]],
    method: str,
    now_ms: int,
    secret_of: Callable[[str], str | None],
    skew_ms: int = DEFAULT_SKEW_MS,
) -> Account | None:
    """The account that signed this call; None if it carries no signature.
    Raises `UnauthenticatedError` for a malformed header, an unknown key, a
    date outside the skew window or a wrong signature (never saying which
    secret was expected)."""
    header = date = None
    for key, value in metadata:
        if key == AUTHORIZATION:
            header = value.decode() if isinstance(value, bytes) else value
        elif key == DATE:
            date = value.decode() if isinstance(value, bytes) else value
    if header is None:
        return None
    m = _HEADER.fullmatch(header)
    if m is None:
        raise UnauthenticatedError(f"malformed authorization header (expected {ALGORITHM} Credential=...)")
    if date is None or not date.isdigit() or len(date) > 16:
        raise UnauthenticatedError(f"missing or malformed {DATE}")
    ak = m["ak"]
    if abs(now_ms - int(date)) > skew_ms:
        raise UnauthenticatedError(
            f"request of {ak!r} signed at {date} ms, {abs(now_ms - int(date)) // 1000} s from this "
            f"server's clock (allowed: {skew_ms // 1000} s); check the client's clock"
        )
    secret = secret_of(ak)
    # one answer for an unknown key and a wrong signature: no oracle of which keys exist
    expected = signature(secret if secret is not None else "\0no such key", method, date)
    if not hmac.compare_digest(expected, m["sig"]) or secret is None:
        raise UnauthenticatedError(
            f"the signature of access key {ak!r} does not verify (unknown key or secret)"
        )
    return Account(ak)
