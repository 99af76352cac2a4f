"""Config tables become frozen dataclasses; bad values name their key."""

from __future__ import annotations

from typing import Any

import pytest

from core.broker_config import load_broker_config
from core.config import describe, load_section
from core.errors import ConfigError, MessageTooLargeError, TailraceError, for_code
from core.store import StoreConfig

pytestmark = pytest.mark.unit


def test_defaults_and_overrides() -> None:
    cfg = load_section(StoreConfig, {"flush": "sync", "segment_bytes": 64 << 20}, "store")
    assert cfg.flush == "sync" and cfg.segment_bytes == 64 << 20
    assert cfg.warm_segments is True and cfg.max_message_bytes == 4 << 20


@pytest.mark.parametrize(
    "table,key",
    [
        ({"flush": "sometimes"}, "store.flush"),
        ({"segment_bytes": "big"}, "store.segment_bytes"),
        ({"segment_bytes": True}, "store.segment_bytes"),
        ({"warm_segments": 1}, "store.warm_segments"),
        ({"retention_hours": -1}, "store.retention_hours"),
        ({"no_such_key": 1}, "store.no_such_key"),
        ({"segment_bytes": 4097}, "store.segment_bytes"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_section(StoreConfig, table, "store")
    assert exc.value.key == key
    assert key in str(exc.value)


def test_every_key_is_documented() -> None:
    for key, _default, doc in describe(StoreConfig):
        assert doc, f"store.{key} has no doc"


def test_error_codes_map_back_to_classes() -> None:
    assert for_code("MESSAGE_TOO_LARGE") is MessageTooLargeError
    assert for_code("NO_SUCH_CODE") is TailraceError
    assert MessageTooLargeError("x").code == "MESSAGE_TOO_LARGE"


def test_retention_that_deletes_unconsumed_data_must_outlast_the_longest_delay() -> None:
    """With store.retention_deletes_unconsumed, a delayed message parked for
    longer than store.retention_hours was deleted before it was due: lost."""
    base = {"broker.broker_name": "g", "store.retention_deletes_unconsumed": True}
    load_broker_config(None, {**base, "store.retention_hours": 72, "broker.max_delay_ms": 3 * 86_400_000})
    with pytest.raises(ConfigError, match=r"broker\.max_delay_ms"):
        load_broker_config(None, {**base, "store.retention_hours": 24, "broker.max_delay_ms": 3 * 86_400_000})
    load_broker_config(None, {"broker.broker_name": "g", "store.retention_hours": 24})  # the floor holds them
