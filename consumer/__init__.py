"""The Tailrace client library: Producer, PullConsumer, PushConsumer, Admin.

Imports only core's generated code, errors, record decoder and subscription
parsing: never the store.
"""

from consumer.admin import Admin
from consumer.producer import Producer, SendReceipt
from consumer.pull_consumer import PullConsumer, ReceivedMessage
from consumer.push_consumer import ConsumeStatus, PushConsumer

__all__ = [
    "Admin",
    "ConsumeStatus",
    "Producer",
    "PullConsumer",
    "PushConsumer",
    "ReceivedMessage",
    "SendReceipt",
]
