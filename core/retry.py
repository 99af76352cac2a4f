"""Retry and dead-letter topics of a consumer group, and the delay levels.

A push consumer hands a message it failed to process back to the broker
(`SendBack`). The broker counts the attempt in the message
(`RECONSUME_TIMES`) and either parks it in the schedule topic (queue = delay
level) until it is due, then moves it to the group's retry topic
`%RETRY%<group>`, which the group's consumers also read; or, after
`max_reconsume` attempts, stores it in the group's dead-letter topic
`%DLQ%<group>`. Names starting with `%` are the broker's: clients cannot
send to them (they may read them, and create retry and dead-letter topics),
nor commit, lock or send back as a group named so (`%SCHEDULER%` is the
schedule's own progress).

Nothing a client puts in a message decides where or when the scheduler
moves it: the attempt count is clamped to the levels (`failed_attempts`),
and a level's due time is its messages' store time plus the level's delay
(`level_delay_ms`), never a property, so each level stays in due order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.errors import InvalidArgumentError, InvalidTopicError, brief
from core.offsets import validate_group
from core.record import MAX_TOPIC_LEN, validate_topic

RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"
SCHEDULE_TOPIC = "%SCHEDULE%"
SCHEDULER_GROUP = "%SCHEDULER%"  # the schedule's progress is a consumer offset of this group

RECONSUME_TIMES = "RECONSUME_TIMES"  # attempts that failed so far
ORIGIN_TOPIC = "ORIGIN_TOPIC"
ORIGIN_MSG_ID = "ORIGIN_MSG_ID"
REAL_TOPIC = "REAL_TOPIC"  # where a scheduled message goes when due
DELIVER_AT = "DELIVER_AT"  # epoch ms

MAX_RECONSUME = 1000  # the most attempts a SendBack may allow (`max_reconsume`)
MAX_GROUP_FOR_RETRY = MAX_TOPIC_LEN - len(RETRY_PREFIX)  # the longest group name that can send back

DEFAULT_DELAYS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DELAY = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def retry_topic(group: str) -> str:
    return RETRY_PREFIX + group


def dlq_topic(group: str) -> str:
    return DLQ_PREFIX + group


def is_reserved(topic: str) -> bool:
    return topic.startswith("%")


def check_client_group(group: str) -> str:
    """A valid group name a client may write as. Groups named `%...` are the
    broker's (the scheduler's progress is `%SCHEDULER%`'s offsets): no client
    commits, locks or sends back as one, whatever the security mode (an ACL
    refuses them too, where there is one)."""
    validate_group(group)
    if is_reserved(group):
        raise InvalidArgumentError(f"group {brief(group)}: names starting with '%' are the broker's")
    return group


def check_send_back(group: str, max_reconsume: int) -> None:
    """A SendBack's group and limit. The group needs valid retry and
    dead-letter topic names; checked before anything is stored, so the
    scheduler never holds a message it cannot move."""
    check_client_group(group)
    for topic in (retry_topic(group), dlq_topic(group)):
        try:
            validate_topic(topic)
        except InvalidTopicError as exc:
            raise InvalidArgumentError(
                f"group {brief(group, 40)} cannot send messages back: its retry topic {RETRY_PREFIX}<group> "
                f"would be invalid ({exc.message[:120]}); a group that sends back has at most "
                f"{MAX_GROUP_FOR_RETRY} characters"
            ) from None
    if not 0 <= max_reconsume <= MAX_RECONSUME:
        raise InvalidArgumentError(f"max_reconsume must be in 0..{MAX_RECONSUME}")


def check_creatable(topic: str) -> None:
    """Clients may create a group's retry or dead-letter topic, no other `%` name."""
    if is_reserved(topic) and not (
        (topic.startswith(RETRY_PREFIX) and len(topic) > len(RETRY_PREFIX))
        or (topic.startswith(DLQ_PREFIX) and len(topic) > len(DLQ_PREFIX))
    ):
        raise InvalidTopicError(f"topic {brief(topic)}: names starting with '%' are the broker's")


def parse_delays(text: str) -> tuple[float, ...]:
    """'1s 5s 1m 2h 500ms' -> seconds per level (level 1 first)."""
    out = []
    for item in text.split():
        m = _DELAY.fullmatch(item)
        if m is None:
            raise InvalidArgumentError(f"delay {item!r}: use a number with ms, s, m or h (e.g. 5s)")
        out.append(float(m.group(1)) * _UNITS[m.group(2)])
    if not out or len(out) > 64:
        raise InvalidArgumentError("give between 1 and 64 delay levels")
    return tuple(out)


def failed_attempts(properties: Mapping[str, str]) -> int:
    """The failed attempts a message claims (`RECONSUME_TIMES`), as the broker
    trusts them: ASCII digits only, clamped to 0..MAX_RECONSUME; anything
    else ("-1", "abc", " 2", other scripts' digits) counts as none so far.
    A client can only ever choose its own message's level, never one past
    the last or a due time of its own."""
    raw = properties.get(RECONSUME_TIMES, "")
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit():
        return 0
    digits = raw.lstrip("0")
    return MAX_RECONSUME if len(digits) > 6 else min(int(digits or "0"), MAX_RECONSUME)


def level_of(attempts: int, levels: int) -> int:
    """Attempt n (1-based) waits at level min(n, levels), 0-based here."""
    return max(0, min(attempts, levels) - 1)


def level_delay_ms(delays: tuple[float, ...], level: int) -> int:
    """The fixed delay of a schedule level; a level past the configured ones
    (the delays were shortened since) waits the last one."""
    return int(delays[min(max(level, 0), len(delays) - 1)] * 1000)


def plan_send_back(
    properties: Mapping[str, str],
    topic: str,
    group: str,
    max_reconsume: int,
    delays: tuple[float, ...],
    now_ms: int,
) -> tuple[str, int, dict[str, str], int]:
    """Where a failed message goes: (topic, queue, its new properties, attempts).

    Attempt n (1-based) waits delay level min(n, levels); past `max_reconsume`
    attempts the message goes to the dead-letter topic. `DELIVER_AT` is for
    the caller to read: the scheduler goes by the level (store time + its
    delay), never by this property."""
    attempts = failed_attempts(properties) + 1
    props = dict(properties)
    props[RECONSUME_TIMES] = str(attempts)
    props.setdefault(ORIGIN_TOPIC, topic)
    props.pop(DELIVER_AT, None)
    props.pop(REAL_TOPIC, None)
    if attempts > max_reconsume:
        return dlq_topic(group), 0, props, attempts
    level = level_of(attempts, len(delays))
    props[REAL_TOPIC] = retry_topic(group)
    props[DELIVER_AT] = str(now_ms + level_delay_ms(delays, level))
    return SCHEDULE_TOPIC, level, props, attempts
