"""What a drill proves, computed from the verifiable logs alone.

Input: the JSON lines `tailrace produce --log` wrote (one per send outcome:
seq, status, broker group, queue, queue offset, epoch, answering address) and
the lines `tailrace consume --log` wrote (one per delivery: seq, group,
queue, offset; one per acknowledged commit). Output: the report's counts and
every violation found:

- `lost`: acknowledged (SEND_OK) sequence numbers never delivered;
- `misplaced`: a delivery at a (group, queue, offset) where an acknowledged
  send landed, carrying another message (a log that diverged and was kept);
- `conflicts`: one (group, queue, offset) delivered with two messages;
- `rewinds_below_commit`: a queue delivered again below an offset the
  consumer had already committed (offsets must not move back past a commit);
- `gaps`: a queue's delivered offsets jumping forward past offsets never
  delivered (per-queue order: every queue is read in offset order, whole);
- `masters_per_epoch`: an epoch in which writes were acknowledged by more
  than one broker.

`send_stall` measures, from the producer's log alone, how long sends stood
still around a fault: the longest gap between consecutive acknowledgements
(their `t`, when the answer arrived) that reaches into a window, and the
longest a batch acknowledged in it waited (`t - sent`; logs from before
`sent` was written give none).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Slot = tuple[str, int, int]  # (group, queue, offset)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a torn last line (a killed writer) is skipped."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def check(produced: Iterable[dict[str, Any]], consumed: Iterable[dict[str, Any]]) -> dict[str, Any]:
    acked: dict[int, Slot] = {}
    ack_masters: dict[tuple[str, int], set[str]] = defaultdict(set)
    attempted = 0
    for p in produced:
        attempted += 1
        if p.get("status") != "SEND_OK":
            continue
        acked[int(p["seq"])] = (str(p.get("broker", "")), int(p["queue"]), int(p["offset"]))
        if p.get("address"):
            ack_masters[(str(p.get("broker", "")), int(p.get("epoch", 0)))].add(str(p["address"]))
    slot_of_ack = {slot: seq for seq, slot in acked.items()}

    delivered: dict[Slot, int] = {}
    seqs: set[int] = set()
    deliveries = 0
    last_offset: dict[tuple[str, int], int] = {}
    last_commit: dict[tuple[str, int], int] = {}
    conflicts: list[Slot] = []
    misplaced: list[Slot] = []
    rewinds_below_commit: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    for c in consumed:
        q = (str(c.get("broker", "")), int(c["queue"]))
        if "commit" in c:
            last_commit[q] = max(last_commit.get(q, 0), int(c["commit"]))
            continue
        if c.get("seq") is None:
            continue
        deliveries += 1
        seq, offset = int(c["seq"]), int(c["offset"])
        seqs.add(seq)
        slot = (q[0], q[1], offset)
        if delivered.setdefault(slot, seq) != seq:
            conflicts.append(slot)
        if slot in slot_of_ack and slot_of_ack[slot] != seq:
            misplaced.append(slot)
        prev = last_offset.get(q, -1)
        if offset <= prev and offset < last_commit.get(q, 0):  # delivered again, below a commit
            rewinds_below_commit.append({"queue": list(q), "offset": offset, "commit": last_commit[q]})
        elif offset > prev + 1 and any((q[0], q[1], o) not in delivered for o in range(prev + 1, offset)):
            gaps.append({"queue": list(q), "from": prev + 1, "to": offset})
        last_offset[q] = offset
    lost = sorted(set(acked) - seqs)
    return {
        "attempted": attempted,
        "acknowledged": len(acked),
        "consumed": len(seqs),
        "deliveries": deliveries,
        "lost": len(lost),
        "lost_sample": lost[:20],
        "duplicated": deliveries - len(seqs),
        "conflicts": len(conflicts),
        "misplaced": len(misplaced),
        "rewinds_below_commit": len(rewinds_below_commit),
        "gaps": len(gaps),
        "masters_per_epoch": {f"{g}/{e}": sorted(a) for (g, e), a in sorted(ack_masters.items())},
        "violations": (
            [f"lost {len(lost)} acknowledged message(s), e.g. {lost[:5]}"] * bool(lost)
            + [f"{len(misplaced)} acknowledged slot(s) delivered another message"] * bool(misplaced)
            + [f"{len(conflicts)} slot(s) delivered with two messages"] * bool(conflicts)
            + [f"rewind below a commit: {rewinds_below_commit[:3]}"] * bool(rewinds_below_commit)
            + [f"offsets skipped: {gaps[:3]}"] * bool(gaps)
            + [
                f"epoch {k} acknowledged by {sorted(a)}"
                for (g, e), a in sorted(ack_masters.items())
                for k in [f"{g}/{e}"]
                if len(a) > 1
            ]
        ),
    }


def send_stall(produced: Iterable[dict[str, Any]], start: float, end: float) -> dict[str, float | None]:
    """`max_send_stall_s`: the longest gap between consecutive acknowledged
    sends' answer times with the later one after `start` and the earlier one
    before `end` (wall clock, s; None: nothing acknowledged after `start`);
    `max_ack_wait_s`: the longest send-to-answer time of a send answered in
    the window."""
    acks = sorted(
        (float(p["t"]), float(p.get("sent", p["t"]))) for p in produced if p.get("status") == "SEND_OK"
    )
    stall = max((b - a for (a, _), (b, _) in itertools.pairwise(acks) if b > start and a < end), default=None)
    waits = [t - s for t, s in acks if start < t < end]
    return {
        "max_send_stall_s": round(stall, 3) if stall is not None else None,
        "max_ack_wait_s": round(max(waits), 3) if waits else None,
    }
