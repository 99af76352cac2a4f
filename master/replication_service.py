"""gRPC adapter for the master's side of replication: one stream per slave.

The response generator streams chunks (or heartbeats when idle) from the
slave's position; a reader thread feeds the slave's acks into the session.
A protocol error from either side closes the stream with FAILED_PRECONDITION
(PERMISSION_DENIED for a wrong secret) and changes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import grpc

from core.errors import TailraceError
from core.pb.tailrace.v1 import replication_pb2 as pb
from core.pb.tailrace.v1 import replication_pb2_grpc
from core.replication import Ack, Handshake, MasterSession, ReplicationError
from master.broker import LOG_KEY, MasterBroker

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def cluster_secret(configured: str) -> str:
    return configured or os.environ.get("TAILRACE_CLUSTER_SECRET", "")


class ReplicationService(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, broker: MasterBroker) -> None:
        self.broker = broker

    def Replicate(
        self, request_iterator: Iterator[pb.ReplicateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ReplicateResponse]:
        b = self.broker
        rep = b.config.replication
        epoch = b.epoch
        session = MasterSession(
            b.store, b.replicas, b.config.broker.cluster, b.broker_name,
            cluster_secret(rep.secret), rep.chunk_bytes, epoch, b.epoch_history(),
        )  # fmt: skip
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("kind") != "handshake":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "REPLICATION: handshake expected first")
        if b.role != "master":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "REPLICATION: this broker is not the master")
        h = first.handshake
        history = tuple((e.epoch, e.start_offset) for e in h.history)
        try:
            reply = session.handshake(
                Handshake(h.cluster, h.group, h.broker_id, h.max_offset, h.secret, h.epoch, history),
                _now_ms(),
                b.confirmed(),
            )
        except ReplicationError as exc:
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if "secret" in exc.message
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            log.warning("refused replica %s/%d: %s", h.group, h.broker_id, exc.message)
            context.abort(code, str(exc))
        log.info("slave %d attached at offset %d", h.broker_id, reply.start_offset)
        yield pb.ReplicateResponse(
            handshake_reply=pb.ReplicaHandshakeReply(
                start_offset=reply.start_offset,
                truncate_to=reply.truncate_to,
                master_max=reply.master_max,
                confirmed=reply.confirmed,
                history=[pb.EpochEntry(epoch=e, start_offset=o) for e, o in reply.history],
            )
        )
        failed: list[TailraceError] = []

        def read_acks() -> None:
            try:
                for req in request_iterator:
                    if req.WhichOneof("kind") != "ack":
                        raise ReplicationError("only acks may follow the handshake")
                    session.on_ack(Ack(req.ack.max_offset, req.ack.flushed_offset), _now_ms())
            except TailraceError as exc:
                failed.append(exc)
                b.notifier.notify([LOG_KEY])
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read_acks, name=f"acks-{h.broker_id}", daemon=True)
        reader.start()
        heartbeat_s = rep.heartbeat_ms / 1000
        try:

            def serving() -> bool:  # a demoted master or a new epoch ends the stream
                return b.role == "master" and b.epoch == epoch and not b.closing

            while context.is_active() and not failed and serving():
                chunk = session.next_chunk(b.confirmed())
                if chunk is not None:
                    yield pb.ReplicateResponse(
                        chunk=pb.ReplicaChunk(
                            offset=chunk.offset, data=chunk.data, epoch=chunk.epoch, confirmed=chunk.confirmed
                        )
                    )
                    continue
                sent = session.next_offset

                def more(sent: int = sent) -> bool:
                    return b.store.commitlog.max_offset > sent or bool(failed) or not serving()

                b.notifier.wait(LOG_KEY, more, heartbeat_s)
                if b.store.commitlog.max_offset <= sent:
                    yield pb.ReplicateResponse(
                        heartbeat=pb.ReplicaHeartbeat(
                            master_max=b.store.commitlog.max_offset, confirmed=b.confirmed()
                        )
                    )
            if failed:
                log.warning("closing the stream of slave %d: %s", h.broker_id, failed[0])
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(failed[0]))
        finally:
            session.close()
