"""Subscription expressions: `*` or `TagA || TagB`.

The broker filters on the ConsumeQueue tag hash (cheap, may let a hash
collision through); the client filters again on the exact tag string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import InvalidArgumentError
from core.record import tag_hash

MAX_EXPRESSION = 4096


@dataclass(frozen=True, slots=True)
class Subscription:
    tags: frozenset[str] | None  # None: everything

    @classmethod
    def parse(cls, expression: str) -> Subscription:
        expr = (expression or "").strip()
        if len(expr) > MAX_EXPRESSION:
            raise InvalidArgumentError(f"subscription longer than {MAX_EXPRESSION} characters")
        if expr in ("", "*"):
            return cls(None)
        tags = [t.strip() for t in expr.split("||")]
        if any(not t or t == "*" or "|" in t for t in tags):
            raise InvalidArgumentError(f"subscription {expression!r} must be '*' or 'TagA || TagB || ...'")
        return cls(frozenset(tags))

    @property
    def expression(self) -> str:
        return "*" if self.tags is None else " || ".join(sorted(self.tags))

    def hash_filter(self) -> Callable[[int], bool] | None:
        """Predicate on ConsumeQueue tag hashes (None: accept everything)."""
        if self.tags is None:
            return None
        return frozenset(tag_hash(t) for t in self.tags).__contains__

    def matches(self, tags: str) -> bool:
        return self.tags is None or tags in self.tags
