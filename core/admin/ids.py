"""Message ids. A native id is `<broker name>@<physical offset as 16 hex
digits>` (broker.proto, SendResponse; upper case as the producer writes it,
consumer/send_logic.py; either case parses): the broker group and the place
in its log. A RocketMQ 5 client's id is the `UNIQ_KEY` property the proxy
stores (core/rocketmq/translate.py); it locates nothing."""

from __future__ import annotations


def format_id(broker_name: str, physical_offset: int) -> str:
    return f"{broker_name}@{physical_offset:016X}"


def parse_id(message_id: str) -> tuple[str, int] | None:
    """(broker name, physical offset) of a native id; None for any other
    string (a RocketMQ client's id, say)."""
    name, sep, hexpart = message_id.rpartition("@")
    if not sep or not name or len(hexpart) != 16:
        return None
    try:
        return name, int(hexpart, 16)
    except ValueError:
        return None
