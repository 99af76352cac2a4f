"""Loading frozen config dataclasses from TOML tables, with errors that name the key.

Every component's config is a frozen dataclass whose fields carry defaults
and a `doc` in their metadata. `load_section` builds one from a mapping,
refusing unknown keys and values of the wrong type, and each dataclass's
`validate()` checks ranges, raising ConfigError with the full key name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError

T = TypeVar("T")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, Enum):
        values = [m.value for m in hint]
        if value not in values:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, values))}, got {value!r}")
        return hint(value)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(key, f"must be a path, got {value!r}")
        return Path(value)
    return value


def load_section(cls: type[T], table: Mapping[str, Any], prefix: str) -> T:
    """Build dataclass `cls` from `table`; keys are reported as `prefix.key`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", "unknown key")
    kwargs = {name: _coerce(f"{prefix}.{name}", value, hints[name]) for name, value in table.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def require(condition: bool, key: str, reason: str) -> None:
    """Raise ConfigError(key, reason) unless `condition` holds (never `assert`)."""
    if not condition:
        raise ConfigError(key, reason)


def describe(cls: type[Any]) -> list[tuple[str, Any, str]]:
    """(key, default, doc) for every field: the source of the documented key list."""
    out: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, Enum):
            default = default.value
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out
