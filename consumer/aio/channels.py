"""`grpc.aio` channels to brokers, one per address, opened on first use
(the asyncio counterpart of consumer/connection.py's pool)."""

from __future__ import annotations

import grpc

from consumer.connection import MAX_MESSAGE_BYTES
from core.pb.tailrace.v1 import broker_pb2_grpc


class AioStubs:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerStub] = {}

    def get(self, address: str) -> broker_pb2_grpc.BrokerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_retries", 0),
                ],
            )
            self._channels[address] = channel
            stub = self._stubs[address] = broker_pb2_grpc.BrokerStub(channel)  # type: ignore[no-untyped-call]
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
