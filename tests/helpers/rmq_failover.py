"""The checks of the RocketMQ failover conformance test
(tests/integration/test_rocketmq_failover.py), as a plain function of the
two official clients' logs (tests/helpers/rmq_client.py, modes `stream` and
`simple_stream`) and the moment the master was killed: no socket, no
clock, so what it accepts and refuses is unit-tested on made-up logs.

A message is named by its place, (queue, offset), read from its receipt
handle (`v1.<base64url(broker|group|topic|queue|offset|gen)>.<mac>`): a
send the producer re-sent after an unknown outcome may be stored twice
with the same body and message id, and each copy is its own message.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Place = tuple[int, int]  # (queue, offset)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines written so far (a line still being written is left out)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def place_of(handle: str) -> tuple[Place, int]:
    """((queue, offset), generation) a receipt handle names (its MAC unchecked)."""
    body = handle.split(".")[1]
    fields = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("|")
    return (int(fields[3]), int(fields[4])), int(fields[5])


@dataclass
class Report:
    acknowledged: int = 0  # sends the producer had acknowledged
    acknowledged_after_kill: int = 0  # of them, sent after the kill
    deliveries: int = 0
    acked: int = 0  # messages (places) acked
    held_across: int = 0  # left unacked before the kill, delivered again after it
    acks_failed: int = 0  # acks refused or failed (their messages must come back)
    acked_before_kill: int = 0  # messages acked before the kill (none may come back)
    acks_across: int = 0  # acks made after the kill of handles received before it
    acks_across_ok: int = 0  # of them, those that succeeded: the new master honoured the old handle
    in_flight_at_kill: list[str] = field(default_factory=list)  # an ack open at the kill, never back
    violations: list[str] = field(default_factory=list)


def pending(produced: list[dict[str, Any]], consumed: list[dict[str, Any]], t_kill: float) -> set[str]:
    """The acknowledged sends' bodies not yet settled: neither acked by a
    successful ack, nor last seen in a failed ack open at the kill (it may
    have been applied: `check` decides whether that is allowed)."""
    last: dict[str, dict[str, Any]] = {}
    for c in consumed:
        if c["ev"] in ("recv", "ack"):
            last[c["body"]] = c
    acked = {c["body"] for c in consumed if c["ev"] == "ack" and c["ok"]}
    open_at_kill = {
        b for b, c in last.items() if c["ev"] == "ack" and not c["ok"] and c["t0"] <= t_kill <= c["t"]
    }
    return {p["body"] for p in produced if p["ok"]} - acked - open_at_kill


def check(produced: list[dict[str, Any]], consumed: list[dict[str, Any]], t_kill: float) -> Report:
    """What the logs show (every rule's breach is a line in `violations`):

    - every acknowledged send was delivered, and each delivered message was
      acked by a successful ack (a lost one is the violation the test is about);
    - a message acked successfully is never delivered again (pop state
      intact: the new master honours the old master's acks);
    - a message whose ack failed (refused INVALID_RECEIPT_HANDLE, or failed
      while the master was gone) is delivered again, except for at most one
      ack open at the kill (the acker makes one at a time): it may have been
      applied and its answer lost with the master (`in_flight_at_kill`);
    - each delivery of a message counts an attempt above the last one
      (handed out again after the failover too), and a generation above it;
    - a message held back (not acked) is delivered again with attempt >= 2."""
    r = Report()
    sent = [p for p in produced if p["ok"]]
    r.acknowledged = len(sent)
    r.acknowledged_after_kill = sum(1 for p in sent if p["t0"] > t_kill)
    received_bodies: set[str] = set()
    last: dict[Place, tuple[int, int]] = {}  # place -> (attempt, generation) of its last delivery
    handed: dict[str, float] = {}  # receipt handle -> when it was received
    acked_at: dict[Place, float] = {}  # place -> when its successful ack ended
    failed: dict[Place, dict[str, Any]] = {}  # place -> its last failed ack, not yet delivered again
    held: dict[Place, float] = {}  # held back (not acked), not yet delivered again
    for c in consumed:
        if c["ev"] not in ("recv", "ack", "hold"):
            continue
        place, gen = place_of(c["handle"]) if "handle" in c else (None, 0)
        if c["ev"] == "recv" and place is not None:
            r.deliveries += 1
            received_bodies.add(c["body"])
            handed[c["handle"]] = c["t"]
            if place in acked_at:
                r.violations.append(f"{c['body']} {place} delivered again after its ack succeeded")
            if place in last:
                attempt, g = last[place]
                if c["attempt"] <= attempt or gen <= g:
                    r.violations.append(
                        f"{c['body']} {place} delivered again as attempt {c['attempt']} gen {gen} "
                        f"after attempt {attempt} gen {g}"
                    )
                if c["attempt"] < 2:
                    r.violations.append(f"{c['body']} {place} delivered again as attempt {c['attempt']}")
            if place in held and held.pop(place) < t_kill < c["t"]:
                r.held_across += 1
            failed.pop(place, None)
            last[place] = (c["attempt"], gen)
        elif c["ev"] == "hold" and place is not None:
            held[place_of(c["handle"])[0]] = c["t"]
        elif c["ev"] == "ack" and place is not None:
            across = handed.get(c["handle"], t_kill) < t_kill < c["t0"]
            r.acks_across += across
            if c["ok"]:
                r.acks_across_ok += across
                r.acked_before_kill += c["t"] < t_kill
                r.acked += 1
                acked_at[place] = c["t"]
            else:
                r.acks_failed += 1
                failed[place] = c
    for p in sent:
        if p["body"] not in received_bodies:
            r.violations.append(f"{p['body']} acknowledged (seq {p['seq']}) but never delivered: lost")
    for place, c in failed.items():
        if c["t0"] <= t_kill <= c["t"] and not r.in_flight_at_kill:
            r.in_flight_at_kill.append(f"{c['body']} {place}: {c.get('error', '')}")
        else:
            r.violations.append(f"{c['body']} {place}: its ack failed and it never came back")
    for place in held:
        r.violations.append(f"{place} held back and never delivered again")
    unacked = set(last) - set(acked_at) - set(failed) - set(held)
    for place in sorted(unacked):
        r.violations.append(f"{place} delivered, never acked")
    return r
