"""Producer: send and batch-send to one broker (routes come with issue 4).

Retry policy: a call is retried only when the broker certainly stored
nothing (it refused before storing: closing down, or over its concurrent
call limit). A dead connection or a passed deadline leaves the outcome
unknown: that error is raised as it is (`BrokerUnavailableError`,
`RequestTimeoutError`), never retried behind the caller's back, because a
retry could store the batch twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc

from consumer.connection import BrokerConnection
from core.errors import StoreClosedError, TailraceError
from core.grpc_status import error_from_rpc
from core.pb.tailrace.v1 import broker_pb2 as pb

_STATUS_NAMES = {v: k for k, v in pb.SendStatus.items()}
SAFE_RETRY_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class SendReceipt:
    status: str  # SEND_OK, FLUSH_DISK_TIMEOUT, ...
    message_id: str
    topic: str
    queue_id: int
    queue_offset: int
    physical_offset: int
    served_by: int


@dataclass(slots=True)
class OutgoingMessage:
    body: bytes
    tags: str = ""
    keys: str = ""
    properties: Mapping[str, str] | None = None


def _pb_message(m: OutgoingMessage | bytes, born_ms: int) -> pb.Message:
    if isinstance(m, bytes | bytearray):
        return pb.Message(body=bytes(m), born_ms=born_ms)
    return pb.Message(
        body=m.body, tags=m.tags, keys=m.keys, properties=dict(m.properties or {}), born_ms=born_ms
    )


def _receipts(resp: pb.SendResponse) -> list[SendReceipt]:
    status = _STATUS_NAMES.get(resp.status, str(resp.status))
    return [
        SendReceipt(
            status,
            r.message_id,
            resp.topic,
            resp.queue_id,
            r.queue_offset,
            r.physical_offset,
            resp.served_by,
        )
        for r in resp.results
    ]


def _safe_to_retry(err: TailraceError, exc: grpc.RpcError | None) -> bool:
    if isinstance(err, StoreClosedError):
        return True
    return (
        exc is not None
        and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and ("Concurrent RPC limit" in (exc.details() or ""))
    )


class Producer:
    def __init__(self, broker: str, timeout_s: float = 10.0, max_in_flight: int = 4) -> None:
        self.conn = BrokerConnection(broker, timeout_s)
        self._window = threading.BoundedSemaphore(max_in_flight)

    def send(
        self,
        topic: str,
        body: bytes,
        tags: str = "",
        keys: str = "",
        properties: Mapping[str, str] | None = None,
        queue_id: int = -1,
    ) -> SendReceipt:
        msg = OutgoingMessage(body, tags, keys, properties)
        req = pb.SendRequest(topic=topic, queue_id=queue_id, message=_pb_message(msg, _now_ms()))
        return _receipts(self._call(self.conn.stub.Send, req))[0]

    def send_batch(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
    ) -> list[SendReceipt]:
        """Store messages for one queue in one call (the broker picks the queue for -1)."""
        return _receipts(
            self._call(self.conn.stub.SendBatch, self._batch(topic, messages, queue_id))
        )

    def send_batch_async(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
    ) -> Future[list[SendReceipt]]:
        """Like send_batch, without waiting; at most `max_in_flight` calls are
        outstanding (this blocks while the window is full)."""
        req = self._batch(topic, messages, queue_id)
        self._window.acquire()
        out: Future[list[SendReceipt]] = Future()
        call = self.conn.stub.SendBatch.future(req, timeout=self.conn.timeout_s)

        def done(f: grpc.Future[pb.SendResponse]) -> None:
            self._window.release()
            try:
                out.set_result(_receipts(f.result()))
            except grpc.RpcError as exc:
                out.set_exception(error_from_rpc(exc))
            except BaseException as exc:  # cancelled
                out.set_exception(exc)

        call.add_done_callback(done)
        return out

    @staticmethod
    def _batch(
        topic: str, messages: Sequence[OutgoingMessage | bytes], queue_id: int
    ) -> pb.SendBatchRequest:
        born = _now_ms()
        return pb.SendBatchRequest(
            topic=topic, queue_id=queue_id, messages=[_pb_message(m, born) for m in messages]
        )

    def _call(self, method: Any, req: object) -> pb.SendResponse:
        for attempt in range(SAFE_RETRY_ATTEMPTS):
            try:
                return method(req, timeout=self.conn.timeout_s)  # type: ignore[no-any-return]
            except grpc.RpcError as exc:
                err = error_from_rpc(exc)
                if attempt + 1 < SAFE_RETRY_ATTEMPTS and _safe_to_retry(err, exc):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise err from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now_ms() -> int:
    return int(time.time() * 1000)
