"""The one clock of leases, heartbeats and expiry: monotonic milliseconds.

Logic takes time as an argument (tests pass a fake clock); the wiring passes
this."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.monotonic() * 1000)
