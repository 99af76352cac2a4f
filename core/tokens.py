"""Opaque MAC'd tokens: receipt handles (core/pop/handles.py) and
transaction ids (core/transactions.py) are both shaped

    <prefix>.<base64url(body)>.<base64url(mac)>

with the MAC the first 16 bytes of HMAC-SHA256 over the body, keyed by a
broker group's key (derived from a label, the cluster secret and the broker
group's name). This module is that shape; each token keeps its own prefix,
body fields, key label, length cap and error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAC_BYTES = 16


def derive_key(label: bytes, cluster_secret: str, broker_name: str) -> bytes:
    """A broker group's key for one kind of token (label: the kind's domain)."""
    return hashlib.sha256(label + b"\0" + cluster_secret.encode() + b"\0" + broker_name.encode()).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]


def seal(key: bytes, prefix: str, body: bytes) -> str:
    return f"{prefix}.{_b64(body)}.{_b64(_mac(key, body))}"


def split(prefix: str, text: object, max_chars: int) -> tuple[bytes, bytes] | None:
    """(body, mac) of a token shaped with this prefix, not checked; None when
    it is not such a token (not a string, too long, another shape)."""
    if not isinstance(text, str) or len(text) > max_chars:
        return None
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    try:
        return _unb64(parts[1]), _unb64(parts[2])
    except (ValueError, UnicodeError):
        return None


def verified(key: bytes, body: bytes, mac: bytes) -> bool:
    """Whether mac is this key's over body (compared in constant time)."""
    return hmac.compare_digest(mac, _mac(key, body))
