"""The slave's replication client: one bidirectional stream to the master,
reconnected with back-off, resumed from the slave's own end."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from core.pb.tailrace.v1 import replication_pb2 as pb
from core.pb.tailrace.v1 import replication_pb2_grpc
from core.replication import Ack, Chunk, HandshakeReply, Heartbeat, SlaveSession
from core.security.identity import Kind
from core.security.serving import ChannelFactory, plaintext_channel

log = logging.getLogger(__name__)
_DONE = object()


def _ack(ack: Ack) -> pb.ReplicateRequest:
    return pb.ReplicateRequest(
        ack=pb.ReplicaAck(max_offset=ack.max_offset, flushed_offset=ack.flushed_offset)
    )


class Replicator:
    def __init__(
        self,
        session: SlaveSession,
        master: str,
        max_message_bytes: int,
        on_progress: Callable[[], None] = lambda: None,
        silence_s: float = 5.0,
        channel_to: ChannelFactory = plaintext_channel,
        master_node: int | None = None,
    ) -> None:
        """`channel_to`: opens the channel to the master's members' port
        (mutual TLS naming a broker of this group, with TLS configured);
        `master_node`: the node the master must be (None: any of the group's)."""
        self.channel_to = channel_to
        self.master_node = master_node
        self.on_progress = on_progress
        self.session = session
        self.master = master
        self.max_message_bytes = max_message_bytes
        self.connected = threading.Event()
        self.last_error = ""
        self._stop = threading.Event()
        self._call: grpc.Future | None = None  # type: ignore[type-arg]
        self._thread = threading.Thread(target=self._run, name="replicator", daemon=True)
        self._last_response = time.monotonic()
        self.silence_s = silence_s
        self._watchdog = threading.Thread(target=self._watch, name="replicator-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def _watch(self) -> None:
        """Cancel a stream that has gone silent (a half-open connection would
        otherwise block until TCP gives up, hours later)."""
        while not self._stop.wait(self.silence_s / 4):
            call = self._call
            if call is not None and time.monotonic() - self._last_response > self.silence_s:
                log.warning("no word from %s for %.1fs: reconnecting", self.master, self.silence_s)
                call.cancel()
                self._last_response = time.monotonic()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._stream()
                backoff = 0.1
            except Exception as exc:  # any failure: back off and reconnect, never die
                detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                if detail != self.last_error:
                    log.warning("replication from %s: %s; retrying", self.master, detail)
                self.last_error = str(detail)
            self.connected.clear()
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 3.0)

    def _stream(self) -> None:
        channel = self.channel_to(
            self.master,
            Kind.BROKER,
            self.session.group,
            [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ],
            node=self.master_node,
        )
        outbox: queue.Queue[object] = queue.Queue()
        hs = self.session.handshake()
        outbox.put(
            pb.ReplicateRequest(
                handshake=pb.ReplicaHandshake(
                    cluster=hs.cluster,
                    group=hs.group,
                    broker_id=hs.broker_id,
                    max_offset=hs.max_offset,
                    secret=hs.secret,
                    epoch=hs.epoch,
                    history=[pb.EpochEntry(epoch=e, start_offset=o) for e, o in hs.history],
                )
            )
        )

        def requests() -> Iterator[pb.ReplicateRequest]:
            while True:
                item = outbox.get()
                if item is _DONE:
                    return
                assert isinstance(item, pb.ReplicateRequest)
                yield item

        try:
            responses = replication_pb2_grpc.ReplicationStub(channel).Replicate(requests())
            self._call = responses
            for resp in responses:
                self._last_response = time.monotonic()
                kind = resp.WhichOneof("kind")
                if kind == "handshake_reply":
                    r = resp.handshake_reply
                    self.session.on_handshake_reply(
                        HandshakeReply(
                            r.start_offset,
                            r.truncate_to,
                            r.master_max,
                            r.confirmed,
                            tuple((e.epoch, e.start_offset) for e in r.history),
                        )
                    )
                    self.connected.set()
                    self.last_error = ""
                    log.info("replicating from %s at offset %d", self.master, r.start_offset)
                    continue
                if kind == "chunk":
                    c = resp.chunk
                    ack = self.session.on_chunk(Chunk(c.offset, c.data, c.epoch, c.confirmed))
                elif kind == "heartbeat":
                    h = resp.heartbeat
                    ack = self.session.on_heartbeat(Heartbeat(h.master_max, h.confirmed, h.retention_floor))
                else:
                    continue
                outbox.put(_ack(ack))
                self.on_progress()
                if self._stop.is_set():
                    break
        finally:
            outbox.put(_DONE)
            self._call = None
            channel.close()

    def close(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(10)
        if self._thread.is_alive():
            log.error("the replication stream from %s did not stop within 10 s", self.master)
