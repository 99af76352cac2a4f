"""The Tailrace client library: Producer, PullConsumer, PushConsumer, Admin,
and the client Profile they take (TLS, account, nameservers).

Imports only core's generated code, errors, record decoder and subscription
parsing: never the store.
"""

from consumer.admin import Admin
from consumer.producer import Producer, SendReceipt
from consumer.profile import ClientSecurity, Profile
from consumer.pull_consumer import PullConsumer, ReceivedMessage
from consumer.push_consumer import ConsumeStatus, PushConsumer

__all__ = [
    "Admin",
    "ClientSecurity",
    "ConsumeStatus",
    "Producer",
    "Profile",
    "PullConsumer",
    "PushConsumer",
    "ReceivedMessage",
    "SendReceipt",
]
