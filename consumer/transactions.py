"""Transactions against the master of a broker group: the native
EndTransaction and PollOrphanTransactions RPCs (master/transactions.py).

A transaction id names its broker group (core/transactions.broker_of), so
an end goes to that group's live master as the topic's route names it.
Ending is idempotent on the master (a repeat answers `repeated`, stores
nothing), so unlike a pop an end whose outcome is unknown is simply tried
again, within the caller's time: after NOT_MASTER with the master it named,
else after refreshing the route. Routes and connections are the caller's
(a Producer's, or the proxy's).

Orphan checks reach native producers only through a proxy today: a native
producer ends its own transactions; one that dies leaves them to the
checks' limit (broker.transaction_max_checks, then rolled back).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumer.connection import ConnectionPool
from consumer.routing import Routes, live_master
from core.errors import BrokerUnavailableError, NotMasterError, RequestTimeoutError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.transactions import broker_of

MIN_CALL_S = 0.05
ATTEMPTS = 3


@dataclass(frozen=True)
class EndResult:
    outcome: str  # "commit", "rollback", or "discard" (the broker rolled it back after its last check)
    repeated: bool  # it had ended so before: nothing was done now


class TransactionClient:
    def __init__(
        self, routes: Routes, pool: ConnectionPool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.routes = routes
        self.pool = pool
        self.clock = clock

    def end(
        self,
        topic: str,
        transaction_id: str,
        commit: bool,
        timeout_s: float,
        from_check: bool = False,
        producer_group: str = "",
    ) -> EndResult:
        """Commit (the half's message is stored in `topic`) or roll back.
        INVALID_TRANSACTION_ID (InvalidTransactionError) when the master
        knows no such open transaction, or it ended the other way."""
        req = pb.EndTransactionRequest(
            topic=topic,
            transaction_id=transaction_id,
            resolution=pb.COMMIT if commit else pb.ROLLBACK,
            from_check=from_check,
            producer_group=producer_group,
        )
        broker = broker_of(transaction_id)
        deadline = self.clock() + timeout_s
        named: str | None = None
        for attempt in range(ATTEMPTS):
            try:
                address = named or self._master(broker, topic, attempt > 0, deadline - self.clock())
                conn = self.pool.get(address)
                reply = conn.call(conn.stub.EndTransaction, req, max(MIN_CALL_S, deadline - self.clock()))
                return EndResult(reply.outcome, reply.repeated)
            except (NotMasterError, BrokerUnavailableError, RequestTimeoutError) as exc:
                if attempt == ATTEMPTS - 1 or deadline - self.clock() < MIN_CALL_S:
                    raise
                named = getattr(exc, "master_address", None) or None
        raise AssertionError("unreachable")  # pragma: no cover

    def poll_orphans(
        self,
        address: str,
        max_count: int,
        wait_ms: int,
        timeout_s: float,
        topics: Sequence[str] = (),
        max_bytes: int = 0,
        delivered: Sequence[str] = (),
        returned: Sequence[str] = (),
        producer_groups: Sequence[str] = (),
    ) -> list[pb.OrphanTransaction]:
        """The orphan checks the master at `address` has for its caller (one
        try): of `topics` (empty: any) and `producer_groups` (empty: any),
        within `max_bytes` (0: the master's limit). Each is leased to the
        caller, which reports it `delivered` (counted) or `returned` (handed
        out again) in a later poll: unreported, it is handed out again after
        the lease (30 s)."""
        conn = self.pool.get(address)
        req = pb.PollOrphanTransactionsRequest(
            max_count=max_count,
            max_wait_ms=wait_ms,
            topics=topics,
            producer_groups=producer_groups,
            max_bytes=max_bytes,
            delivered=delivered,
            returned=returned,
        )
        return list(conn.call(conn.stub.PollOrphanTransactions, req, timeout_s).orphans)

    def _master(self, broker_name: str, topic: str, refresh: bool, timeout_s: float) -> str:
        return live_master(self.routes, broker_name, topic, refresh, max(MIN_CALL_S, timeout_s))
