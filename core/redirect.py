"""The read-redirect decision: plain functions of numbers, no broker inside.

On every pull the master compares the consumer's unconsumed backlog (bytes
of CommitLog after the next record it will read) with its page-cache budget.
Over budget, the data is cold: the master answers this pull with the small
"cold" batch limits and suggests an eligible slave (alive, in sync, holding
past the next offset; chosen by a hash of group and queue so consumers
spread). With hysteresis: a queue sent away comes back only once its backlog
is below `return_ratio x budget`. A slave suggests the master back when the
backlog is that small or the consumer reached the slave's end.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum

from core.route import MASTER_ID

NO_SUGGESTION = -1


class RedirectReason(StrEnum):
    """Why a pull's answer suggests another broker, or why it does not.
    On the wire (`PullResponse.suggestion_reason`) and in metrics: the value."""

    NONE = ""
    OVER_BUDGET = "backlog_over_budget"  # master: cold backlog, a slave is suggested
    CAUGHT_UP = "caught_up"  # the backlog is small again: back to the master
    NO_SLAVE = "no_slave_available"  # master: cold, but no slave is connected and in sync
    REPLICA_BEHIND = "replica_behind"  # the replica does not hold the next record yet
    SLAVE_END = "slave_end"  # slave: the consumer reached its end


@dataclass(frozen=True, slots=True)
class SlaveView:
    broker_id: int
    alive: bool
    in_sync: bool
    acked: int  # the slave holds the log below this offset


@dataclass(frozen=True, slots=True)
class Advice:
    suggested_broker_id: int
    reason: RedirectReason
    cold: bool  # serve this pull with the cold (disk) batch limits
    retry_elsewhere: bool = False  # this replica cannot serve the offset yet


NO_ADVICE = Advice(NO_SUGGESTION, RedirectReason.NONE, False)


def route_key(group: str, topic: str, queue_id: int) -> int:
    return zlib.crc32(f"{group}/{topic}/{queue_id}".encode())


def advise_master(
    backlog: int,
    budget: int,
    redirected: bool,
    next_offset: int,
    slaves: list[SlaveView],
    key: int,
    return_ratio: float,
) -> tuple[Advice, bool]:
    """(advice for this pull, whether the queue counts as sent away now)."""
    over = backlog >= return_ratio * budget if redirected else backlog > budget
    if not over:
        return Advice(
            NO_SUGGESTION, RedirectReason.CAUGHT_UP if redirected else RedirectReason.NONE, False
        ), False
    live = [s for s in slaves if s.alive and s.in_sync]
    eligible = sorted((s for s in live if s.acked > next_offset), key=lambda s: s.broker_id)
    if not eligible:
        return Advice(
            NO_SUGGESTION, RedirectReason.REPLICA_BEHIND if live else RedirectReason.NO_SLAVE, True
        ), redirected
    chosen = eligible[key % len(eligible)]
    return Advice(chosen.broker_id, RedirectReason.OVER_BUDGET, True), True


def advise_slave(backlog: int, budget: int, return_ratio: float, at_end: bool) -> Advice:
    if at_end:
        return Advice(MASTER_ID, RedirectReason.SLAVE_END, False)
    if backlog < return_ratio * budget:
        return Advice(MASTER_ID, RedirectReason.CAUGHT_UP, False)
    return Advice(NO_SUGGESTION, RedirectReason.NONE, True)


def batch_limits(
    cold: bool,
    requested_messages: int,
    requested_bytes: int,
    hot: tuple[int, int],
    cold_limits: tuple[int, int],
) -> tuple[int, int]:
    """The pull's (max messages, max bytes): what was asked, capped by the
    hot or cold limits (0 asked = the limit itself)."""
    count, nbytes = cold_limits if cold else hot
    return (min(requested_messages or count, count), min(requested_bytes or nbytes, nbytes))
