"""`grpc.aio` channels to brokers, one per address, opened on first use
(the asyncio counterpart of consumer/connection.py's pool)."""

from __future__ import annotations

import grpc

from consumer.channels import BROKER_OPTIONS, open_aio_channel
from consumer.profile import PLAINTEXT, ClientSecurity
from core.pb.tailrace.v1 import broker_pb2_grpc


class AioStubs:
    def __init__(self, security: ClientSecurity = PLAINTEXT) -> None:
        self.security = security
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerStub] = {}

    def get(self, address: str) -> broker_pb2_grpc.BrokerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_aio_channel(address, self.security, BROKER_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = broker_pb2_grpc.BrokerStub(channel)  # type: ignore[no-untyped-call]
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
