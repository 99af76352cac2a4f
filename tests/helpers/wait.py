"""Waiting in tests: poll a condition until a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout_s: float = 30.0, what: str = "condition") -> float:
    """Poll `cond` every 10 ms until it is truthy; returns the seconds it took.
    Raises AssertionError naming `what` at the deadline."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - t0
