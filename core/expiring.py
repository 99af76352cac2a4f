"""Keys that expire: the broker's tables keyed by what clients send.

A table keyed by client input (consumer groups, queue locks, queues sent to
a slave, metrics series) must not grow with every name a client ever used.
`ExpiringKeys` remembers when each key was last touched, forgets it after
`ttl_ms`, and refuses a new key beyond `max_keys` (the caller turns that
into a quota error). Plain object: the clock is passed in; not thread-safe
(callers hold their own lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class ExpiringKeys:
    def __init__(self, ttl_ms: int, max_keys: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_keys = max_keys
        self._seen: OrderedDict[Hashable, int] = OrderedDict()  # oldest touch first

    def touch(self, key: Hashable, now_ms: int) -> bool:
        """Mark `key` as used now; False (nothing changed) when it is new and
        the table is full even after forgetting expired keys."""
        if key in self._seen:
            self._seen.move_to_end(key)
        else:
            if len(self._seen) >= self.max_keys:
                self.expire(now_ms)
                if len(self._seen) >= self.max_keys:
                    return False
        self._seen[key] = now_ms
        return True

    def discard(self, key: Hashable) -> None:
        self._seen.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def expire(self, now_ms: int) -> list[Hashable]:
        """Forget the keys not touched for `ttl_ms`; returns them."""
        gone = []
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if now_ms - seen < self.ttl_ms:
                break
            del self._seen[key]
            gone.append(key)
        return gone
