"""The Tailrace client library: Producer, PullConsumer, Admin.

Imports only core's generated code, errors, record decoder and subscription
parsing: never the store.
"""

from consumer.admin import Admin
from consumer.producer import Producer, SendReceipt
from consumer.pull_consumer import PullConsumer, ReceivedMessage

__all__ = ["Admin", "Producer", "PullConsumer", "ReceivedMessage", "SendReceipt"]
