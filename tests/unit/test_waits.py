"""The test waits themselves (deploy/waits.py): a wait that cannot fail
would make every test using it pass for nothing."""

from __future__ import annotations

import time

import pytest

from deploy.waits import ConditionBroke, WaitTimeout, holds_for, poll_until


def test_poll_until_returns_once_true_and_times_out_otherwise() -> None:
    calls = iter([False, False, True])
    assert poll_until(lambda: next(calls), 5, "third call", every_s=0.001) < 5
    with pytest.raises(WaitTimeout, match="never"):
        poll_until(lambda: False, 0.05, "never", every_s=0.001)


def test_holds_for_checks_all_along_and_fails_the_first_time_it_breaks() -> None:
    seen: list[float] = []

    def true_and_counted() -> bool:
        seen.append(time.monotonic())
        return True

    holds_for(true_and_counted, 0.1, "always", every_s=0.01)
    assert len(seen) >= 3 and seen[-1] - seen[0] >= 0.1  # checked through the window, to its end
    calls = iter([True, True, False, True])
    with pytest.raises(ConditionBroke, match="flaky"):
        holds_for(lambda: next(calls), 5, "flaky", every_s=0.001)
