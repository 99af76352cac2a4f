"""asyncio clients on `grpc.aio`, built on the same plain logic as the
threaded ones (consumer/send_logic.py, consumer/retry_plan.py,
consumer/circuit.py, consumer/fetcher.py, consumer/push_queues.py): only the
I/O differs."""

from consumer.aio.consumer import AsyncPullConsumer
from consumer.aio.producer import AsyncProducer
from consumer.aio.push_consumer import AsyncHandler, AsyncPushConsumer

__all__ = ["AsyncHandler", "AsyncProducer", "AsyncPullConsumer", "AsyncPushConsumer"]
