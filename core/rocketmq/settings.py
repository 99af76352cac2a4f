"""The settings exchange on a `Telemetry` stream: a client writes its
`Settings`, the server answers them completed.

As RocketMQ's proxy does (`GrpcClientSettingsManager`), the answer is the
client's own settings with the server's merged in. What the official
clients need of it (their code, checked in the research for issue 18):

- producers copy `publishing.max_body_size` blindly (0 would fail every
  send), and use `backoff_policy.max_attempts` if it is exponential;
- push consumers wait up to 10 s for the first answer, take `fifo` from it
  once, and long-poll for `subscription.long_polling_timeout` (missing: no
  long poll, a busy loop); their retry delays come from
  `backoff_policy.customized_backoff`;
- everyone gets `metric.on = false` (on, a client starts an OTLP exporter
  to `metric.endpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.retry import DEFAULT_DELAYS, parse_delays

PRODUCER_ATTEMPTS = 3
CONSUMER_ATTEMPTS = 16  # the brokers' default broker.pop_max_attempts, until they tell theirs
RECEIVE_BATCH = 32
CONSUMERS = (
    d.PUSH_CONSUMER,
    d.SIMPLE_CONSUMER,
    d.PULL_CONSUMER,
    d.LITE_PUSH_CONSUMER,
    d.LITE_SIMPLE_CONSUMER,
)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the proxy decides for its clients."""

    max_body_bytes: int
    long_polling_ms: int = 20_000  # the default, and the most a client is allowed
    min_long_polling_ms: int = 5_000
    retry_delays: tuple[float, ...] = parse_delays(DEFAULT_DELAYS)
    max_attempts: int = CONSUMER_ATTEMPTS  # the brokers' pop_max_attempts: deliveries before %DLQ%<group>
    auto_renew_invisible_ms: int = 60_000  # push consumers' invisibility, renewed by core/rocketmq/renew.py


def answer(client: d.Settings, server: ServerSettings) -> d.Settings:
    """The client's settings, completed (the input is not changed)."""
    out = d.Settings()
    out.CopyFrom(client)
    out.metric.Clear()
    out.metric.on = False
    if client.client_type == d.PRODUCER or client.HasField("publishing"):
        out.publishing.max_body_size = server.max_body_bytes
        if not client.HasField("publishing"):
            out.publishing.validate_message_type = True
        out.backoff_policy.Clear()
        out.backoff_policy.max_attempts = PRODUCER_ATTEMPTS
        exp = out.backoff_policy.exponential_backoff
        exp.initial.FromMilliseconds(10)
        exp.max.FromMilliseconds(1000)
        exp.multiplier = 2.0
    if client.client_type in CONSUMERS or client.HasField("subscription"):
        sub = out.subscription
        asked = client.subscription.long_polling_timeout.ToMilliseconds()
        wanted = asked if client.subscription.HasField("long_polling_timeout") else server.long_polling_ms
        polling = min(max(wanted, server.min_long_polling_ms), server.long_polling_ms)
        sub.long_polling_timeout.FromMilliseconds(polling)
        sub.receive_batch_size = RECEIVE_BATCH
        sub.fifo = False  # orderly (FIFO) consumption is not served: every group is concurrent
        out.backoff_policy.Clear()
        out.backoff_policy.max_attempts = server.max_attempts
        for delay in server.retry_delays[: max(1, server.max_attempts - 1)]:
            out.backoff_policy.customized_backoff.next.add().FromMilliseconds(int(delay * 1000))
    return out
