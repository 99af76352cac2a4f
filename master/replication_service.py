"""gRPC adapter for the master's side of replication: one stream per slave.

The response generator streams chunks (or heartbeats when idle) from the
slave's position; a reader thread feeds the slave's acks into the session.
A protocol error from either side ends the stream with the error's status
(`REPLICATION`: FAILED_PRECONDITION; a wrong secret: PERMISSION_DENIED) and
changes nothing. A follower never gets here: `Replicate` is leader-only
(core/access.py). The stream ends when the leader role it began under is
retired (demotion) or the broker shuts down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from core.broker.core import LOG_KEY, BrokerCore
from core.clock import now_ms
from core.errors import BrokerBusyError, PermissionDeniedError, ReplicationError, TailraceError
from core.pb.tailrace.v1 import replication_pb2 as pb
from core.pb.tailrace.v1 import replication_pb2_grpc
from core.replication import Ack, Chunk, Handshake, MasterSession
from core.security.guard import caller
from core.security.identity import Member

log = logging.getLogger(__name__)


def _chunk(c: Chunk) -> pb.ReplicateResponse:
    return pb.ReplicateResponse(
        chunk=pb.ReplicaChunk(offset=c.offset, data=c.data, epoch=c.epoch, confirmed=c.confirmed)
    )


MAX_STREAMS = 16  # replication streams a leader serves at once (16 slaves is the group's limit)


def _first(
    requests: Iterator[pb.ReplicateRequest], context: grpc.ServicerContext, timeout_s: float
) -> pb.ReplicateRequest | None:
    """The stream's first request, or None when it does not come within
    `timeout_s`: the stream is cancelled then, so a peer that never says who it
    is holds no server thread past the deadline."""
    got = threading.Event()

    def expire() -> None:
        if not got.is_set():
            log.warning("a replication stream sent no handshake in %.1f s: closed", timeout_s)
            context.cancel()

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        first = next(requests, None)
    except grpc.RpcError:  # cancelled by the deadline
        return None
    finally:
        got.set()
        timer.cancel()
    return first


class ReplicationService(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, core: BrokerCore) -> None:
        self.core = core
        # streams at once: each holds a server thread for its life (a peer that
        # opened many would take every thread the broker has)
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._open = 0  # streams being served now (observability and tests)
        self._open_lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        return self._open

    def Replicate(
        self, request_iterator: Iterator[pb.ReplicateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ReplicateResponse]:
        if not self._streams.acquire(blocking=False):
            raise BrokerBusyError(f"{MAX_STREAMS} replication streams are open: no more")
        with self._open_lock:
            self._open += 1
        try:
            yield from self._replicate(request_iterator, context)
        finally:
            with self._open_lock:
                self._open -= 1
            self._streams.release()

    def _replicate(
        self, request_iterator: Iterator[pb.ReplicateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ReplicateResponse]:
        core = self.core
        leader = core.leader()
        rep = core.config.replication
        who = caller()  # a member certificate of this group (TLS), checked by the guard
        # with a certificate the peer is proven: no shared secret is asked for
        secret = None if isinstance(who, Member) else rep.resolved_secret()
        session = MasterSession(
            core.store, leader.replicas, core.config.broker.cluster, core.broker_name,
            secret, rep.chunk_bytes, leader.epoch, core.epoch_history(),
        )  # fmt: skip
        first = _first(request_iterator, context, rep.handshake_timeout_ms / 1000)
        if first is None:
            return
        if first.WhichOneof("kind") != "handshake":
            raise ReplicationError("handshake expected first")
        h = first.handshake
        if isinstance(who, Member) and who.node != h.broker_id:
            raise PermissionDeniedError(f"{who} may not replicate as broker {h.broker_id}")
        history = tuple((e.epoch, e.start_offset) for e in h.history)
        try:
            reply = session.handshake(
                Handshake(h.cluster, h.group, h.broker_id, h.max_offset, h.secret, h.epoch, history),
                now_ms(),
                leader.confirmed(),
            )
        except ReplicationError as exc:
            log.warning("refused replica %s/%d: %s", h.group, h.broker_id, exc.message)
            raise
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
                    session.on_ack(Ack(req.ack.max_offset, req.ack.flushed_offset), now_ms())
            except TailraceError as exc:
                failed.append(exc)
                core.notifier.notify([LOG_KEY])
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read_acks, name=f"acks-{h.broker_id}", daemon=True)
        reader.start()
        heartbeat_s = rep.heartbeat_ms / 1000
        clog = core.store.commitlog

        def serving() -> bool:  # a retired leader (demotion) or a shutdown ends the stream
            return not leader.retired and not core.closing

        try:
            while context.is_active() and not failed and serving():
                chunk = session.next_chunk(leader.confirmed())
                if chunk is not None:
                    yield _chunk(chunk)
                    continue
                sent = session.next_offset

                def more(sent: int = sent) -> bool:
                    return clog.max_offset > sent or bool(failed) or not serving()

                core.notifier.wait(LOG_KEY, more, heartbeat_s)
                if clog.max_offset <= sent:
                    hb = session.heartbeat(leader.confirmed(), core.retention_floor())
                    yield pb.ReplicateResponse(
                        heartbeat=pb.ReplicaHeartbeat(
                            master_max=hb.master_max,
                            confirmed=hb.confirmed,
                            retention_floor=hb.retention_floor,
                        )
                    )
            if failed:
                log.warning("closing the stream of slave %d: %s", h.broker_id, failed[0])
                raise failed[0]
        finally:
            session.close()
