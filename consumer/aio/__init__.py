"""asyncio clients on `grpc.aio`, built on the same plain logic as the
threaded ones (consumer/send_logic.py, consumer/retry_plan.py,
consumer/circuit.py): only the I/O differs."""

from consumer.aio.consumer import AsyncPullConsumer
from consumer.aio.producer import AsyncProducer

__all__ = ["AsyncProducer", "AsyncPullConsumer"]
