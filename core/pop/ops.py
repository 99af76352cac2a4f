"""What the leader's pop operations return, and the operations themselves as
the broker's core and adapters see them (`LeaderOps.popper`; the master's
implementation is master/popper.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import TailraceError
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
class PopResult:
    messages: list[PoppedMessage]
    advice: Advice  # for the proxy: where cold reads of this queue could go (issue 6)
    held: bool  # the pop waited for messages (long polling)


class PopOps(Protocol):
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
    ) -> PopResult: ...

    def ack(self, group: str, topic: str, handle: str) -> None: ...

    def ack_all(self, group: str, topic: str, handles: Sequence[str]) -> list[TailraceError | None]: ...

    def change_invisible(
        self, group: str, topic: str, handle: str, invisible_ms: int, keep_handle: bool = False
    ) -> tuple[str, int]: ...

    def dead_letter(self, group: str, topic: str, handle: str) -> None: ...
