"""Our etcd v3 client: the JSON gRPC gateway over the standard library.

Why our own: the maintained Python etcd libraries pin protobuf and grpcio
versions that clash with ours; the gateway needs only HTTP and JSON.
`wire.py` holds the gateway's JSON and its traps, `transport.py` the HTTP,
deadlines and endpoint failover (reads vs writes), `fake.py` an in-memory
stand-in with the same API for unit tests.

**Lease expiry: trust only your own clock.** etcd resets every lease to its
full TTL when it elects a new leader (the new leader does not know how much
of a lease had run), so a lease can live longer than the TTLs etcd answers
suggest, never shorter than what its holder last renewed. A holder must
therefore never estimate its lease's expiry from etcd's answers (the TTL of
a keepalive or timetolive); it counts from its own monotonic clock, from the
moment it *sent* its last successful keepalive: held until
`sent_at + granted_ttl`, and not a moment longer. Others waiting for the
lease to go must wait for etcd to delete it (a watch or a read), not count.

Minimum TTL: etcd raises a shorter TTL to 1.5 election timeouts, rounded up
to a whole second (2 s with `--election-timeout 1000`); `lease_grant` returns
the TTL granted.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from types import TracebackType

from core.etcd import wire
from core.etcd.errors import NOT_FOUND, EtcdError
from core.etcd.model import Compare, Op, RangeResult, TxnResult, WatchEvent
from core.etcd.transport import Stream, Transport


class WatchStream(Iterator[WatchEvent]):
    """The events of one watch, in revision order. Iteration ends when no
    event came for `timeout_s` or the stream broke (the caller re-watches
    from the next revision it needs); `close()` ends it early."""

    def __init__(self, stream: Stream, timeout_s: float) -> None:
        self._stream: Stream | None = stream
        self._timeout_s = timeout_s
        self._pending: list[WatchEvent] = []

    def __next__(self) -> WatchEvent:
        while not self._pending:
            if self._stream is None:
                raise StopIteration
            message = self._stream.next_message(self._timeout_s)
            if message is None:
                self._stream = None
                raise StopIteration
            try:
                _, self._pending = wire.watch_message(message)
            except EtcdError:
                self.close()
                raise
        return self._pending.pop(0)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EtcdClient:
    def __init__(
        self,
        endpoints: list[str],
        timeout_s: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str = "",
    ) -> None:
        """`endpoints`: `http://host:port` or `https://host:port`; `timeout_s`:
        the deadline of each attempt on one endpoint; `server_name`: over
        https, a DNS name etcd's certificate must carry besides the host (so
        another certificate of the same CA cannot pose as etcd)."""
        self._transport = Transport(endpoints, timeout_s, ssl_context, server_name)

    @property
    def endpoint(self) -> str:
        """The endpoint the next call tries first (the last one that answered)."""
        return self._transport.current

    def get(self, key: bytes, *, prefix: bool = False, serializable: bool = False) -> RangeResult:
        """Linearizable unless `serializable` (then the member's local copy, maybe stale)."""
        request = wire.range_request(key, prefix, serializable)
        return wire.range_result(self._transport.call("/v3/kv/range", request, write=False))

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """The revision of the put."""
        body = self._transport.call("/v3/kv/put", wire.put_request(key, value, lease), write=True)
        return wire.revision_of(body)

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """How many keys were deleted."""
        body = self._transport.call("/v3/kv/deleterange", wire.delete_request(key, prefix), write=True)
        return wire.deleted_count(body)

    def txn(self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None) -> TxnResult:
        body = wire.txn_request(compare, success, failure or [])
        return wire.txn_result(self._transport.call("/v3/kv/txn", body, write=True))

    def lease_grant(self, ttl_s: int) -> tuple[int, int]:
        """(lease id, granted TTL s): etcd may raise the TTL to its minimum."""
        body = self._transport.call("/v3/lease/grant", wire.lease_grant_request(ttl_s), write=True)
        return wire.lease_granted(body)

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease; its TTL in seconds, 0 if it expired or is unknown.
        See the module docstring: count its expiry from when you sent this."""
        body = self._transport.call("/v3/lease/keepalive", wire.lease_request(lease_id), write=False)
        return wire.keepalive_ttl(body)

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke the lease, deleting its keys; an unknown lease is not an error."""
        try:
            self._transport.call("/v3/lease/revoke", wire.lease_request(lease_id), write=True)
        except EtcdError as exc:
            if exc.code != NOT_FOUND:
                raise

    def lease_time_to_live(self, lease_id: int) -> int:
        """The lease's remaining TTL as etcd sees it (whole seconds, rounded
        down), -1 if it expired or is unknown. For checks and tests: see the
        module docstring before relying on it."""
        body = self._transport.call("/v3/lease/timetolive", wire.lease_request(lease_id), write=False)
        return wire.time_to_live(body)

    def watch(
        self, key: bytes, *, start_revision: int = 0, prefix: bool = False, timeout_s: float
    ) -> WatchStream:
        """Events on `key` (or the prefix) from `start_revision` (0: from now).
        The watch is created when this returns; iteration ends after
        `timeout_s` with no event, or on a broken stream."""
        request = wire.watch_request(key, start_revision, prefix)
        stream, first = self._transport.open_stream("/v3/watch", request)
        watch = WatchStream(stream, timeout_s)
        try:
            _, watch._pending = wire.watch_message(first)
        except EtcdError:
            watch.close()
            raise
        return watch

    def member_status(self) -> tuple[int, int]:
        """(member id, leader id) from the endpoint that answers: leader 0 if it knows none."""
        return wire.member_status(self._transport.call("/v3/maintenance/status", {}, write=False))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
