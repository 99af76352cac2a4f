"""RocketMQ 5's request signature (`MQv2-HMAC-SHA1`), checked against our accounts.

The official clients put on every call (a Telemetry stream: once, at open)

    x-mq-date-time: 20261126T062131Z
    authorization:  MQv2-HMAC-SHA1 Credential=<access key>,
                    SignedHeaders=x-mq-date-time, Signature=<hex>

with Signature = hex(HMAC-SHA1(secret key, date)), lower case. The date is
the client's *local* time labelled as UTC: the Python client formats
`datetime.now()` with a `Z`, the Java client a `SimpleDateFormat` in the
JVM's zone. RocketMQ's own server never compares the date with a clock. So,
by default (`any_timezone`), a date is accepted within the skew of now
*shifted by any whole quarter-hour offset from -12 h to +14 h* (every zone
there is): an official client works unmodified in any zone, and a header
seen once replays for about 105 skew windows spread over 26 h instead of
one (RocketMQ's: forever). Without `any_timezone` the date must be UTC
within the skew (clients run with `TZ=UTC`).
The signature covers only the date, not the method or the body: weaker than
our own header (core/security/signing.py), so a header seen once authorizes
any RPC for the skew window. That is the protocol; under TLS nobody else
sees headers. The accounts, secrets and skew rule are the native ones
(core/security/acl.py, `auth.max_skew_ms`).

A client without credentials still sends the header, with an empty
`Credential=` (an HMAC under the empty key): that, like no header at all, is
an anonymous caller (None).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.errors import PermissionDeniedError, UnauthenticatedError, brief
from core.security.acl import AclFile, Permissions
from core.security.identity import ANONYMOUS, Account, Principal
from core.security.signing import DEFAULT_SKEW_MS

AUTHORIZATION = "authorization"
DATE = "x-mq-date-time"
ALGORITHM = "MQv2-HMAC-SHA1"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_HEADER = re.compile(
    rf"{ALGORITHM} Credential=(?P<ak>[A-Za-z0-9_.\-]{{0,128}}), ?"
    rf"SignedHeaders=(?P<signed>[a-z\-;]{{1,64}}), ?Signature=(?P<sig>[0-9a-fA-F]{{40}})"
)
_DATE = re.compile(r"\d{8}T\d{6}Z")


def signature(secret_key: str, date: str) -> str:
    return hmac.new(secret_key.encode(), date.encode(), hashlib.sha1).hexdigest()


def header(access_key: str, secret_key: str, date: str) -> tuple[tuple[str, str], ...]:
    """The metadata an official client sends at `date` (tests, tools)."""
    sig = signature(secret_key, date)
    value = f"{ALGORITHM} Credential={access_key}, SignedHeaders={DATE}, Signature={sig}"
    return ((DATE, date), (AUTHORIZATION, value))


def date_of(now_ms: int) -> str:
    """`x-mq-date-time` for a wall-clock time in ms (UTC)."""
    return datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC).strftime(DATE_FORMAT)


QUARTER_HOUR_MS = 15 * 60 * 1000
ZONE_OFFSETS = range(-12 * 4, 14 * 4 + 1)  # UTC-12..UTC+14 in quarter hours


def date_off_ms(signed_ms: int, now_ms: int, any_timezone: bool) -> int:
    """How far a signed date is from now: from now in UTC, or with
    `any_timezone` from now shifted by the nearest zone offset."""
    off = signed_ms - now_ms
    if any_timezone:
        k = min(max(round(off / QUARTER_HOUR_MS), ZONE_OFFSETS[0]), ZONE_OFFSETS[-1])
        off -= k * QUARTER_HOUR_MS
    return abs(off)


def verify_mqv2(
    metadata: Iterable[tuple[str, str | bytes]],
    now_ms: int,
    secret_of: Callable[[str], str | None],
    skew_ms: int = DEFAULT_SKEW_MS,
    any_timezone: bool = True,
) -> Account | None:
    """The account that signed this call; None for an anonymous one (no
    header, or an empty Credential). Raises `UnauthenticatedError` for a
    malformed header or date, an unknown key or a wrong signature (one
    message for both: no oracle of which keys exist), or a date outside
    `skew_ms` of `now_ms` (in any zone with `any_timezone`)."""
    value = date = None
    for key, raw in metadata:
        if key == AUTHORIZATION:
            value = raw.decode() if isinstance(raw, bytes) else raw
        elif key == DATE:
            date = raw.decode() if isinstance(raw, bytes) else raw
    if not value:
        return None
    m = _HEADER.fullmatch(value.strip())
    if m is None:
        raise UnauthenticatedError(f"malformed authorization header (expected {ALGORITHM} Credential=...)")
    ak = m["ak"]
    if not ak:
        return None  # the official client's form without credentials
    if m["signed"] != DATE:
        raise UnauthenticatedError(f"the signature must cover {DATE} alone, not {m['signed']!r}")
    if date is None or not _DATE.fullmatch(date):
        raise UnauthenticatedError(f"missing or malformed {DATE} (expected YYYYMMDDTHHMMSSZ)")
    try:
        signed_at = datetime.datetime.strptime(date, DATE_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise UnauthenticatedError(f"{DATE} {date!r} is not a date") from None
    off_ms = date_off_ms(int(signed_at.timestamp() * 1000), now_ms, any_timezone)
    if off_ms > skew_ms:
        zone = "in any time zone" if any_timezone else "in UTC; run the client with TZ=UTC"
        raise UnauthenticatedError(
            f"request of {ak!r} signed at {date}, {off_ms // 1000} s from this server's clock "
            f"(allowed: {skew_ms // 1000} s {zone}); check the client's clock"
        )
    secret = secret_of(ak)
    expected = signature(secret if secret is not None else "\0no such key", date)
    if not hmac.compare_digest(expected, m["sig"].lower()) or secret is None:
        raise UnauthenticatedError(
            f"the signature of access key {ak!r} does not verify (unknown key or secret)"
        )
    return Account(ak)


Rule = Callable[[Permissions], str | None]  # None: allowed; else what is missing


@dataclass
class Mqv2Policy:
    """Who may make a v2 call: the native `SecurityPolicy`'s client rules
    with the v2 header. `acl` None: no accounts, open (loopback or
    `--insecure`, as the native processes)."""

    acl: AclFile | None
    allow_anonymous: bool = False
    skew_ms: int = DEFAULT_SKEW_MS
    any_timezone: bool = True

    def check(self, metadata: Iterable[tuple[str, str | bytes]], now_ms: int, rule: Rule) -> Principal:
        """The caller, if `rule` allows it; raises `UnauthenticatedError`
        (not proven) or `PermissionDeniedError` (proven, not allowed)."""
        if self.acl is None:
            return ANONYMOUS
        acl = self.acl.current(now_ms)
        account = verify_mqv2(metadata, now_ms, acl.secret_of, self.skew_ms, self.any_timezone)
        principal: Principal
        if account is not None:
            perms = acl.permissions.get(account.access_key)
            if perms is None:
                raise UnauthenticatedError(f"unknown access key {brief(account.access_key)}")
            principal = account
        elif self.allow_anonymous and acl.anonymous is not None:
            perms, principal = acl.anonymous, ANONYMOUS
        else:
            raise UnauthenticatedError(
                "this server requires a signed request (an account): anonymous access is off"
            )
        missing = rule(perms)
        if missing:
            raise PermissionDeniedError(f"{principal} may not {missing}")
        return principal

    def allows(self, principal: Principal, now_ms: int, rule: Rule) -> bool:
        """Whether `principal`, proven at the start of its call, may still do
        what `rule` says under the ACL in force now (reloaded since, maybe):
        a stream's later work is checked so, its signature long past."""
        if self.acl is None:
            return True
        acl = self.acl.current(now_ms)
        if isinstance(principal, Account):
            perms = acl.permissions.get(principal.access_key)
        else:
            perms = acl.anonymous if self.allow_anonymous else None
        return perms is not None and not rule(perms)


def publish(topic: str) -> Rule:
    return lambda p: None if p.may_publish(topic) else f"publish to topic {brief(topic)}"


def use_group(group: str) -> Rule:
    return lambda p: None if not group or p.may_use_group(group) else f"use group {brief(group)}"


def any_account(p: Permissions) -> str | None:
    return None


def consume(topic: str, group: str) -> Rule:
    """Receive, ack, change or dead-letter `topic`'s messages as `group`:
    the native Pop's rule (subscribe on the topic, as a group it may use)."""
    return lambda p: (
        None
        if p.may_subscribe(topic, group)
        else f"subscribe to topic {brief(topic)} as group {brief(group)}"
    )
