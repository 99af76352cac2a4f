"""Requests to a nameserver's web console, signed as a script would sign them."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.security.signing import sign


def console_get(
    url: str,
    path: str,
    ca_file: Path | None = None,
    account: tuple[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, Any]:
    """(HTTP status, the JSON body, or the raw bytes when it is not JSON) of
    `path` on the console at `url`, signed as `account` (access key, secret
    key) when given, verified with `ca_file` over HTTPS."""
    headers = {}
    if account is not None:
        headers = dict(sign(account[0], account[1], f"{method} {path}", time.time_ns() // 1_000_000))
    req = urllib.request.Request(url.rstrip("/") + path, headers=headers, method=method)
    ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body
