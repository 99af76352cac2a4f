"""etcd v3 over its JSON gateway (client.py), and an in-memory stand-in (fake.py).

The failover controller keeps its state here (issue 17); see docs/design.md, "etcd".
"""

from core.etcd.client import EtcdClient, WatchStream
from core.etcd.errors import EtcdError, EtcdOutcomeUnknown, EtcdUnavailable
from core.etcd.model import Compare, KeyValue, Op, RangeResult, TxnResult, WatchEvent

__all__ = [
    "Compare",
    "EtcdClient",
    "EtcdError",
    "EtcdOutcomeUnknown",
    "EtcdUnavailable",
    "KeyValue",
    "Op",
    "RangeResult",
    "TxnResult",
    "WatchEvent",
    "WatchStream",
]
