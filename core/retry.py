"""Retry and dead-letter topics of a consumer group, and the delay levels.

A push consumer hands a message it failed to process back to the broker
(`SendBack`). The broker counts the attempt in the message
(`RECONSUME_TIMES`) and either parks it in the schedule topic (queue = delay
level) until it is due, then moves it to the group's retry topic
`%RETRY%<group>`, which the group's consumers also read; or, after
`max_reconsume` attempts, stores it in the group's dead-letter topic
`%DLQ%<group>`. Names starting with `%` are the broker's: clients cannot
send to them (they may read them, and create retry and dead-letter topics).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.errors import InvalidArgumentError, InvalidTopicError

RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"
SCHEDULE_TOPIC = "%SCHEDULE%"
SCHEDULER_GROUP = "%SCHEDULER%"  # the schedule's progress is a consumer offset of this group

RECONSUME_TIMES = "RECONSUME_TIMES"  # attempts that failed so far
ORIGIN_TOPIC = "ORIGIN_TOPIC"
ORIGIN_MSG_ID = "ORIGIN_MSG_ID"
REAL_TOPIC = "REAL_TOPIC"  # where a scheduled message goes when due
DELIVER_AT = "DELIVER_AT"  # epoch ms

DEFAULT_DELAYS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DELAY = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def retry_topic(group: str) -> str:
    return RETRY_PREFIX + group


def dlq_topic(group: str) -> str:
    return DLQ_PREFIX + group


def is_reserved(topic: str) -> bool:
    return topic.startswith("%")


def check_creatable(topic: str) -> None:
    """Clients may create a group's retry or dead-letter topic, no other `%` name."""
    if is_reserved(topic) and not (
        (topic.startswith(RETRY_PREFIX) and len(topic) > len(RETRY_PREFIX))
        or (topic.startswith(DLQ_PREFIX) and len(topic) > len(DLQ_PREFIX))
    ):
        raise InvalidTopicError(f"topic {topic!r}: names starting with '%' are the broker's")


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
    attempts the message goes to the dead-letter topic."""
    try:
        failed = int(properties.get(RECONSUME_TIMES, "0"))
    except ValueError:
        failed = 0
    attempts = failed + 1
    props = dict(properties)
    props[RECONSUME_TIMES] = str(attempts)
    props.setdefault(ORIGIN_TOPIC, topic)
    props.pop(DELIVER_AT, None)
    props.pop(REAL_TOPIC, None)
    if attempts > max_reconsume:
        return dlq_topic(group), 0, props, attempts
    level = min(attempts, len(delays)) - 1
    props[REAL_TOPIC] = retry_topic(group)
    props[DELIVER_AT] = str(now_ms + int(delays[level] * 1000))
    return SCHEDULE_TOPIC, level, props, attempts
