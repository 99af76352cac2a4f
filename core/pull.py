"""Serving a pull from a store: limits, tag filter, long polling.

Role-independent: the master adds its redirect advice (issue 6), a slave its
confirmed-offset limit (issue 5), around this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import InvalidArgumentError
from core.longpoll import ArrivalNotifier
from core.offsets import validate_group
from core.redirect import Advice
from core.store import MessageStore, ReadResult, ReadStatus
from core.subscription import Subscription


@dataclass(frozen=True, slots=True)
class PullLimits:
    max_wait_ms: int
    max_messages: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class PullArgs:
    """What a consumer asks for (0 for max_messages/max_bytes: the defaults)."""

    group: str
    topic: str
    queue_id: int
    queue_offset: int
    max_messages: int = 0
    max_bytes: int = 0
    max_wait_ms: int = 0
    subscription: str = "*"


@dataclass(frozen=True, slots=True)
class Served:
    """A read, and whether the pull was held waiting for records (a
    `NO_NEW_MSG` that was not held means: this broker would not wait now)."""

    result: ReadResult
    held: bool


@dataclass(frozen=True, slots=True)
class PullReply:
    """What a broker answers a pull: the read, the redirect advice, and
    whether it was held (the client backs off briefly after an unheld empty
    answer instead of guessing from timing)."""

    result: ReadResult
    advice: Advice
    held: bool


def check_pull(args: PullArgs) -> None:
    """Refuse bad pull arguments before a broker does or counts anything for
    them (a metrics series per client-sent group name, say)."""
    validate_group(args.group)
    Subscription.parse(args.subscription)
    if args.max_messages < 0 or args.max_bytes < 0 or args.max_wait_ms < 0:
        raise InvalidArgumentError("max_messages, max_bytes and max_wait_ms must be >= 0")


def serve_pull(
    store: MessageStore,
    notifier: ArrivalNotifier,
    limits: PullLimits,
    args: PullArgs,
    alive: Callable[[], bool] = lambda: True,
    visible_end: Callable[[], int | None] = lambda: None,
) -> Served:
    """Read, and if there is nothing new, hold the pull until a record arrives,
    the wait ends, or `alive()` turns false (the caller went away).
    `visible_end()` caps what may be read (the confirmed offset). The
    arguments were checked (`check_pull`) before anything was counted."""
    sub = Subscription.parse(args.subscription)
    topic, queue_id, queue_offset = args.topic, args.queue_id, args.queue_offset
    count = min(args.max_messages or 32, limits.max_messages)
    nbytes = min(args.max_bytes or 256 * 1024, limits.max_bytes)
    wait_s = min(args.max_wait_ms, limits.max_wait_ms) / 1000
    tag_filter = sub.hash_filter()
    result = store.read(topic, queue_id, queue_offset, count, nbytes, tag_filter, visible_end())
    if result.status is not ReadStatus.NO_NEW_MSG or wait_s <= 0:
        return Served(result, False)
    deadline = time.monotonic() + wait_s
    key = (topic, queue_id)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Served(result, True)

        def readable() -> bool:
            if store.next_queue_offset(topic, queue_id) <= queue_offset:
                return False
            cap = visible_end()
            if cap is None:
                return True
            phys, size, _ = store.cqs.queues[(topic, queue_id)].entry(queue_offset)
            return phys + size <= cap

        notifier.wait(key, lambda: readable() or not alive(), left)
        if not alive() or not readable():
            return Served(result, True)
        result = store.read(topic, queue_id, queue_offset, count, nbytes, tag_filter, visible_end())
        if result.status is not ReadStatus.NO_NEW_MSG:
            return Served(result, True)
