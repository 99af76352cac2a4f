"""What the leader's pop operations return, and the operations themselves as
the broker's core and adapters see them (`LeaderOps.popper`; the master's
implementation is master/popper.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.errors import TailraceError
from core.pop.recent import RecentPops
from core.record import Record
from core.redirect import Advice


@dataclass(frozen=True)
class PoppedMessage:
    record: Record
    data: bytes  # the stored record's bytes, as a pull returns them
    attempt: int  # deliveries so far, this one included (1: the first)
    handle: str
    deadline_ms: int  # wall-clock ms until which no other pop hands it out


@dataclass(frozen=True)
class PoppedElsewhere:
    """A popped message of a cold queue whose bytes the caller reads from
    another broker of the group (`bodies_elsewhere`): where, not what."""

    queue_id: int
    queue_offset: int
    size: int  # the stored record's bytes
    read_from: int  # the broker id (a slave that held it when it was popped)
    attempt: int
    handle: str
    deadline_ms: int
    physical_offset: int  # the record's CommitLog offset: the caller checks the record it reads


@dataclass(frozen=True)
class PopResult:
    messages: list[PoppedMessage]
    advice: Advice  # for the proxy: where cold reads of this queue could go (issue 6)
    held: bool  # the pop waited for messages (long polling)
    elsewhere: list[PoppedElsewhere] = field(default_factory=list)  # (bodies_elsewhere only)


class PopOps(Protocol):
    recent: RecentPops  # each group's last pop per topic (core/pop/recent.py)
    clock: Callable[[], int]  # wall-clock ms: pops' deadlines and `recent`'s times

    def pop(
        self,
        group: str,
        topic: str,
        queue_id: int,
        max_messages: int,
        invisible_ms: int,
        wait_ms: int = 0,
        alive: Callable[[], bool] = ...,
        tag_expression: str = "",
        bodies_elsewhere: bool = False,
    ) -> PopResult: ...

    def ack(self, group: str, topic: str, handle: str) -> None: ...

    def ack_all(self, group: str, topic: str, handles: Sequence[str]) -> list[TailraceError | None]: ...

    def change_invisible(
        self, group: str, topic: str, handle: str, invisible_ms: int, keep_handle: bool = False
    ) -> tuple[str, int]: ...

    def dead_letter(self, group: str, topic: str, handle: str) -> None: ...
