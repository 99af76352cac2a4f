"""The RocketMQ failover test's checks (tests/helpers/rmq_failover.py) on
made-up client logs: what they must refuse, they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from core.pop.handles import Receipt, encode_handle, handle_key
from tests.helpers.rmq_failover import check, pending, place_of

pytestmark = pytest.mark.unit
KEY = handle_key("", "broker-a")
KILL = 100.0


def handle(offset: int, gen: int, queue: int = 0) -> str:
    return encode_handle(KEY, Receipt("broker-a", "g", "t", queue, offset, gen))


def sent(seq: int, t: float = 1.0) -> dict[str, Any]:
    return {"seq": seq, "body": f"fo-{seq}", "ok": True, "t0": t, "t": t}


def recv(seq: int, gen: int, t: float, attempt: int = 1) -> dict[str, Any]:
    return {"ev": "recv", "body": f"fo-{seq}", "attempt": attempt, "handle": handle(seq, gen), "t": t}


def ack(seq: int, gen: int, t: float, ok: bool = True, t0: float | None = None) -> dict[str, Any]:
    return {"ev": "ack", "body": f"fo-{seq}", "handle": handle(seq, gen), "ok": ok, "t0": t0 or t, "t": t}


def hold(seq: int, gen: int, t: float) -> dict[str, Any]:
    return {"ev": "hold", "body": f"fo-{seq}", "handle": handle(seq, gen), "t": t}


def test_a_handle_names_its_place_and_generation() -> None:
    assert place_of(handle(7, 5 << 32, queue=1)) == ((1, 7), 5 << 32)


def test_a_clean_failover_passes_and_is_counted() -> None:
    produced = [sent(0), sent(1), sent(2), sent(3, t=120)]
    consumed = [
        recv(0, 1, 10), ack(0, 1, 11),  # acked before the kill
        recv(1, 2, 90), ack(1, 2, 101),  # received before, acked after: the new master honours it
        recv(2, 3, 95), hold(2, 3, 95), recv(2, 2 << 32, 110, attempt=2), ack(2, 2 << 32, 111),
        recv(3, (2 << 32) + 1, 121), ack(3, (2 << 32) + 1, 122),
    ]  # fmt: skip
    r = check(produced, consumed, KILL)
    assert r.violations == []
    assert (r.acknowledged, r.acknowledged_after_kill, r.acked, r.acked_before_kill) == (4, 1, 4, 1)
    assert (r.held_across, r.acks_across, r.acks_across_ok) == (1, 1, 1)
    assert pending(produced, consumed, KILL) == set()


def test_an_acked_message_delivered_again_is_refused() -> None:
    consumed = [recv(0, 1, 10), ack(0, 1, 11), recv(0, 2 << 32, 110, attempt=2), ack(0, 2 << 32, 111)]
    r = check([sent(0)], consumed, KILL)
    assert any("delivered again after its ack succeeded" in v for v in r.violations)


def test_an_acknowledged_send_never_delivered_is_lost() -> None:
    r = check([sent(0), sent(1)], [recv(0, 1, 10), ack(0, 1, 11)], KILL)
    assert r.violations == ["fo-1 acknowledged (seq 1) but never delivered: lost"]
    assert pending([sent(0), sent(1)], [recv(0, 1, 10), ack(0, 1, 11)], KILL) == {"fo-1"}


def test_a_failed_ack_must_come_back_unless_it_was_open_at_the_kill() -> None:
    came_back = [
        recv(0, 1, 90),
        ack(0, 1, 100.5, ok=False),
        recv(0, 2 << 32, 105, attempt=2),
        ack(0, 2 << 32, 106),
    ]
    assert check([sent(0)], came_back, KILL).violations == []
    never_back = [recv(0, 1, 90), ack(0, 1, 100.5, ok=False)]
    assert check([sent(0)], never_back, KILL).violations != []
    assert pending([sent(0)], never_back, KILL) == {"fo-0"}
    open_at_kill = [recv(0, 1, 90), ack(0, 1, 100.5, ok=False, t0=99.9)]
    r = check([sent(0)], open_at_kill, KILL)
    assert r.violations == [] and len(r.in_flight_at_kill) == 1
    assert pending([sent(0)], open_at_kill, KILL) == set()
    two_open = [*open_at_kill, recv(1, 2, 90), ack(1, 2, 100.6, ok=False, t0=99.95)]
    assert len(check([sent(0), sent(1)], two_open, KILL).violations) == 1  # one ack is open at a time


def test_attempts_and_generations_count_up_and_held_messages_come_back() -> None:
    same_attempt = [recv(0, 1, 90), hold(0, 1, 90), recv(0, 2 << 32, 110, attempt=1), ack(0, 2 << 32, 111)]
    assert check([sent(0)], same_attempt, KILL).violations != []
    old_gen = [recv(0, 5, 90), hold(0, 5, 90), recv(0, 4, 110, attempt=2), ack(0, 4, 111)]
    assert check([sent(0)], old_gen, KILL).violations != []
    never_back = [recv(0, 1, 90), hold(0, 1, 90)]
    assert check([sent(0)], never_back, KILL).violations == ["(0, 0) held back and never delivered again"]
