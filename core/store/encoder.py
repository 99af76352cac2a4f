"""Step 1 of the append path: validate and encode a whole batch before the
write lock is taken, so one bad message rejects the batch and nothing is
written.

`BatchEncoder` keeps two caches that make this cheap: (topic name bytes,
queue count) per topic, and the encoded meta block (core.record) per
(topic, tags) of messages without keys or properties. Topic definitions
change through `define_topic`, under the same lock that fills the topic
cache, so the cache never keeps a stale queue count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from core.errors import InvalidArgumentError, InvalidQueueError, MessageTooLargeError, UnknownTopicError
from core.record import FIXED, Message, encode_meta, encode_properties, tag_hash, validate_topic
from core.store.commitlog import Prepared
from core.store.topics import TopicTable

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
FIXED_SIZE = FIXED.size
log = logging.getLogger("core.store.store")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"{what} is not valid text: {exc.reason}") from exc


class BatchEncoder:
    def __init__(
        self,
        topics: TopicTable,
        max_message_bytes: int,
        max_properties: int = 128,
        max_properties_bytes: int = 32 * 1024,
    ) -> None:
        self.max_properties = max_properties
        self.max_properties_bytes = max_properties_bytes
        self.topics = topics
        self.max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._topic_info: dict[str, tuple[bytes, int]] = {}
        self._meta_cache: dict[tuple[str, str], tuple[bytes, int]] = {}
        self.topic_listeners: list[Callable[[str], None]] = []
        self.deletions = 0  # topics deleted so far (forget_topic)

    # ---- topic definitions ---------------------------------------------------

    def queue_count(self, topic: str) -> int:
        """The queue count of an existing topic (validates the name)."""
        validate_topic(topic)
        count = self.topics.queue_count(topic)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        return count

    def define_topic(self, topic: str, queues: int) -> None:
        """Define a topic or raise its queue count (TopicTable.create), and
        forget what the caches hold for it; then, if it changed, tell the
        topic listeners (a listener's failure is logged, never raised)."""
        with self._lock:
            changed = self.topics.create(topic, queues)
            self._topic_info.pop(topic, None)
            self._meta_cache.clear()
        if changed:
            for listener in self.topic_listeners:
                try:
                    listener(topic)
                except Exception:
                    log.exception("topic listener failed")

    def forget_topic(self, topic: str) -> bool:
        """Delete a topic from the table (TopicTable.remove) and the caches;
        then, if it was defined, tell the topic listeners. `deletions` counts
        them: an append validated before one is checked again (store.py)."""
        with self._lock:
            removed = self.topics.remove(topic)
            self._topic_info.pop(topic, None)
            self._meta_cache.clear()
            if removed:
                self.deletions += 1
        if removed:
            for listener in self.topic_listeners:
                try:
                    listener(topic)
                except Exception:
                    log.exception("topic listener failed")
        return removed

    def ensure_queues(self, wanted: Mapping[str, int]) -> None:
        """Grow each topic of `wanted` to at least its queue count (a slave
        whose log began at its master's oldest retained segment may have
        missed the topic's system record: it covers the queue ids replicated
        records use). Every name and count is checked before any topic
        changes: a bad one (InvalidTopicError, InvalidArgumentError) changes
        nothing."""
        grow = [(t, q) for t, q in wanted.items() if self.topics.would_change(t, q)]
        for topic, queues in grow:
            self.define_topic(topic, queues)

    # ---- encoding --------------------------------------------------------------

    def _topic_entry(self, topic: str) -> tuple[bytes, int]:
        with self._lock:  # define_topic holds it too: never cache a stale count
            info = (validate_topic(topic), self.queue_count(topic))
            self._topic_info[topic] = info
        return info

    def _meta_entry(self, topic: str, tags: str) -> tuple[bytes, int]:
        """(meta block, tag hash) of a message with no keys or properties, cached."""
        if not isinstance(tags, str):
            raise InvalidArgumentError(f"tags must be a string, got {type(tags).__name__}")
        topic_b = topic.encode("ascii")  # validated by the caller
        tags_b = _utf8(tags, "tags")
        if len(tags_b) > 0xFFFF:
            raise InvalidArgumentError("tags must be at most 65535 bytes")
        entry = (encode_meta(topic_b, tags_b, b"", b""), tag_hash(tags))
        if len(self._meta_cache) < 4096:
            self._meta_cache[(topic, tags)] = entry
        return entry

    def _full_meta(self, m: Message) -> tuple[bytes, int]:
        """(meta block, tag hash) of a message with keys or properties."""
        _meta, th = self._meta_entry(m.topic, m.tags)
        keys = m.keys
        if not isinstance(keys, str):
            raise InvalidArgumentError(f"keys must be a string, got {type(keys).__name__}")
        keys_b = _utf8(keys, "keys")
        if len(keys_b) > 0xFFFF:
            raise InvalidArgumentError("keys must be at most 65535 bytes")
        props_b = self._encode_props(m.properties) if m.properties else b""
        tags_b = _utf8(m.tags, "tags")
        return encode_meta(m.topic.encode("ascii"), tags_b, keys_b, props_b), th

    def prepare(self, messages: Sequence[Message], new_topic_queues: int = 0) -> list[Prepared]:
        """Validate and encode a whole batch, raising before anything is written.

        With `new_topic_queues`, unknown topics are treated as having that many
        queues (a broker checks a batch before auto-creating its topic)."""
        info = self._topic_info
        meta_cache = self._meta_cache
        max_bytes = self.max_message_bytes
        out: list[Prepared] = []
        add = out.append
        for m in messages:
            if type(m) is not Message:
                raise InvalidArgumentError(f"expected a Message, got {type(m).__name__}")
            topic = m.topic
            ti = info.get(topic) if type(topic) is str else None
            if ti is None:
                if new_topic_queues and self.topics.queue_count(validate_topic(topic).decode()) is None:
                    ti = (topic.encode("ascii"), new_topic_queues)
                else:
                    ti = self._topic_entry(topic)
            count = ti[1]
            qid = m.queue_id
            if type(qid) is not int or not 0 <= qid < count:
                raise InvalidQueueError(f"queue id {qid!r} out of range for {topic!r} (0..{count - 1})")
            body = m.body
            if type(body) is not bytes:
                if not isinstance(body, bytes | bytearray | memoryview):
                    raise InvalidArgumentError(f"body must be bytes, got {type(body).__name__}")
                body = bytes(body)
            if m.keys or m.properties:
                meta, th = self._full_meta(m)
            else:
                tags = m.tags
                mt = meta_cache.get((topic, tags)) if type(tags) is str else None
                meta, th = mt if mt is not None else self._meta_entry(topic, tags)
            flags, born = m.flags, m.born_ms
            if type(flags) is not int or not 0 <= flags <= _U32:
                raise InvalidArgumentError(f"flags must be an integer in 0..{_U32}, got {flags!r}")
            if type(born) is not int or not 0 <= born <= _U64:
                raise InvalidArgumentError(f"born_ms must be an integer in 0..{_U64}, got {born!r}")
            size = FIXED_SIZE + len(meta) + len(body)
            if size > max_bytes:
                raise MessageTooLargeError(f"record of {size} bytes exceeds max_message_bytes {max_bytes}")
            add((topic, meta, body, qid, flags, born, size, th))
        return out

    def _encode_props(self, props: object) -> bytes:
        if not isinstance(props, Mapping):
            raise InvalidArgumentError(f"properties must be a mapping, got {type(props).__name__}")
        if len(props) > self.max_properties:
            raise MessageTooLargeError(
                f"{len(props)} properties exceed store.max_properties {self.max_properties}"
            )
        try:
            encoded = encode_properties(props)
        except ValueError as exc:  # UnicodeEncodeError included
            raise InvalidArgumentError(str(exc)) from exc
        if len(encoded) > self.max_properties_bytes:
            limit = self.max_properties_bytes
            raise MessageTooLargeError(
                f"properties of {len(encoded)} bytes exceed store.max_properties_bytes {limit}"
            )
        return encoded
