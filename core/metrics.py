"""Prometheus metrics of a broker (prometheus-client, text format on its own port).

Counters and the append-latency histogram are updated on the request paths;
offsets, replication lag, the in-sync set, the page-cache budget and process
memory are read at scrape time by a collector, so nothing is kept twice.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, tls_files: tuple[str, str] | None
) -> int:
    """The Prometheus endpoint; HTTPS (TLS 1.2 or newer) with `tls_files`."""
    if tls_files is None:
        server, _thread = start_http_server(port, host, registry=registry)
    else:
        server, _thread = start_http_server(
            port, host, registry=registry, certfile=tls_files[0], keyfile=tls_files[1],
            tls_min_version=ssl.TLSVersion.TLSv1_2,
        )  # fmt: skip
    return int(server.server_port)


class BrokerMetrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("tailrace_messages_in", "Messages stored", ["topic"], registry=r)
        self.bytes_in = Counter("tailrace_bytes_in", "Message body bytes stored", ["topic"], registry=r)
        self.messages_out = Counter(
            "tailrace_messages_out", "Messages served to consumers", ["topic"], registry=r
        )
        self.bytes_out = Counter(
            "tailrace_bytes_out", "Record bytes served to consumers", ["topic"], registry=r
        )
        self.pulls = Counter("tailrace_pulls", "Pulls answered, by status", ["status"], registry=r)
        self.redirects = Counter(
            "tailrace_pull_advice", "Redirect advice given, by reason", ["reason"], registry=r
        )
        self.append_latency = Histogram(
            "tailrace_append_seconds",
            "Store append latency (one batch)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.backlog = Gauge(
            "tailrace_consumer_backlog_bytes",
            "Unconsumed log bytes behind a group's position, as of its last pull (master)",
            ["group", "topic", "queue"],
            registry=r,
        )
        # the retry schedule (master/scheduler.py); `level` is a schedule queue (at most 64)
        self.schedule_dead_lettered = Counter(
            "tailrace_schedule_dead_lettered",
            "Due messages that could not go to their retry topic and went to the dead letters",
            ["level"],
            registry=r,
        )
        self.schedule_skipped = Counter(
            "tailrace_schedule_skipped",
            "Due messages that could go neither to their retry nor to a dead-letter topic (logged, dropped)",
            ["level"],
            registry=r,
        )
        self.schedule_level_failures = Counter(
            "tailrace_schedule_level_failures",
            "Scheduler passes over a level that failed (the level is tried again next pass)",
            ["level"],
            registry=r,
        )
        # pops (master/popper.py): where the popped messages' bytes are read, `here`
        # (in the answer) or `elsewhere` (a cold queue's, read from a slave by the caller)
        self.popped = Counter(
            "tailrace_popped_messages",
            "Messages handed out by pops, by where their bytes are read",
            ["bodies"],
            registry=r,
        )
        # the timer (master/timer.py): set by its thread each pass, 0 on a broker not leading
        self.timer_pending = Gauge("tailrace_timer_pending", "Messages the timer holds due later", registry=r)
        self.timer_pending_bytes = Gauge(
            "tailrace_timer_pending_bytes", "Body bytes of the messages the timer holds", registry=r
        )
        self.timer_lag = Gauge(
            "tailrace_timer_lag_ms",
            "How long the most overdue message the timer holds has been due",
            registry=r,
        )
        self.timer_delivery_lag = Histogram(
            "tailrace_timer_delivery_lag_seconds",
            "Time from a delayed message's due time to its store in its topic",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )
        self.timer_skipped = Counter(
            "tailrace_timer_skipped",
            "Timer messages that could not be stored in their topic (logged)",
            registry=r,
        )
        self.timer_rolled = Counter(
            "tailrace_timer_rolled",
            "Pending timer messages copied to the wait queue's end (bounds rebuild)",
            registry=r,
        )
        self.timer_rolled_bytes = Counter(
            "tailrace_timer_rolled_bytes",
            "Body bytes the timer's rolls copied (at most ROLL_RATIO x the body bytes delivered)",
            registry=r,
        )
        self.timer_failures = Counter(
            "tailrace_timer_failures",
            "Timer passes or deliveries that failed and are tried again",
            registry=r,
        )
        self.transactions_open = Gauge(
            "tailrace_transactions_open", "Half messages neither committed nor rolled back", registry=r
        )
        self.transactions_ended = Counter(
            "tailrace_transactions_ended",
            "Transactions ended, by outcome (commit, rollback; discard: rolled back after the last check)",
            ["outcome"],
            registry=r,
        )
        self.transaction_checks = Counter(
            "tailrace_transaction_checks", "Orphan checks offered to producers (through proxies)", registry=r
        )
        r.register(_StateCollector(snapshot))

    def serve(self, host: str, port: int, tls_files: tuple[str, str] | None = None) -> int:
        """Serve /metrics (over HTTPS with `tls_files`: (certificate, key));
        returns the bound port (port 0 picks one)."""
        return serve_metrics(self.registry, host, port, tls_files)


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.process = psutil.Process(os.getpid())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot()
        for name, doc in (
            ("min_offset", "CommitLog minimum offset"),
            ("max_offset", "CommitLog end offset"),
            ("flushed_offset", "CommitLog offset known durable"),
            ("confirmed_offset", "Offset confirmed by enough slaves (sync) or the end (async)"),
            ("budget_bytes", "Page-cache budget for read redirection"),
            ("consume_queues", "ConsumeQueues held"),
            ("consume_queues_mapped", "ConsumeQueues with their files mapped (store.cq_max_open bounds it)"),
            ("held_pulls", "Long polls waiting"),
            ("system_records_skipped", "System records whose content could not be applied (logged)"),
            ("quarantined_tails", "Log tails recovery cut and kept in the data dir's quarantine/"),
            ("quarantined_bytes", "Bytes of the log tails kept in quarantine/"),
        ):
            yield GaugeMetricFamily(f"tailrace_{name}", doc, value=float(s.get(name, 0)))
        lag = GaugeMetricFamily(
            "tailrace_replica_lag_bytes", "Master end minus a slave's acked offset", labels=["slave"]
        )
        for slave_id, lag_bytes in s.get("replica_lag", {}).items():
            lag.add_metric([str(slave_id)], float(lag_bytes))
        yield lag
        qmax = GaugeMetricFamily(
            "tailrace_queue_max_offset", "Next queue offset of each ConsumeQueue", labels=["topic", "queue"]
        )
        for (topic, queue), off in s.get("queue_max", {}).items():
            qmax.add_metric([topic, str(queue)], float(off))
        yield qmax
        yield GaugeMetricFamily(
            "tailrace_in_sync_slaves", "Slaves in the in-sync set", value=float(s.get("in_sync", 0))
        )
        # who this broker is now (the role changes on failover): for joins in alert rules
        info = GaugeMetricFamily(
            "tailrace_broker_info", "This broker: its group, id and role (always 1)",
            labels=["group", "broker_id", "role"],
        )  # fmt: skip
        if "info" in s:
            info.add_metric(list(s["info"]), 1.0)
        yield info
        group_lag = GaugeMetricFamily(
            "tailrace_consumer_lag_messages",
            "Messages after a group's committed offset (master; queues held in memory)",
            labels=["group", "topic", "queue"],
        )
        lags, dropped = s.get("group_lag", ({}, 0))
        for (group, topic, queue), n in lags.items():
            group_lag.add_metric([group, topic, str(queue)], float(n))
        yield group_lag
        yield GaugeMetricFamily(
            "tailrace_consumer_lag_series_dropped",
            "Consumer-lag series left out for the cap (groups whose commits moved in the last day)",
            value=float(dropped),
        )
        yield GaugeMetricFamily(
            "tailrace_disk_used_ratio",
            "How full the data disk is (0..1)",
            value=float(s.get("disk_used_ratio", 0)),
        )
        yield GaugeMetricFamily(
            "tailrace_disk_max_used_ratio",
            "The disk watermark (store.disk_max_used_ratio): sends are refused above it",
            value=float(s.get("disk_max_used_ratio", 1)),
        )
        used = GaugeMetricFamily("tailrace_quota_used", "What a quota counts, now", labels=["quota"])
        limit = GaugeMetricFamily("tailrace_quota_limit", "A quota's configured limit", labels=["quota"])
        for name, (n, cap) in s.get("quotas", {}).items():
            if n is not None:
                used.add_metric([name], float(n))
            limit.add_metric([name], float(cap))
        yield used
        yield limit
        yield GaugeMetricFamily(
            "tailrace_process_rss_bytes", "Resident memory", value=float(self.process.memory_info().rss)
        )


# (cluster, group) -> (live brokers, live masters, brokers known in the last day)
GroupCounts = Callable[[], dict[tuple[str, str], tuple[int, int, int]]]
MAX_GROUPS_SEEN = 10_000  # broker groups a nameserver keeps reporting after their last broker went


class NameserverMetrics:
    """A nameserver's metrics: live brokers, route lookups, and per broker
    group its live brokers and masters (a group whose every broker expired
    is reported with 0 of both, so "no master" stays visible)."""

    def __init__(self, live_brokers: Callable[[], int], groups: GroupCounts = dict) -> None:
        self.registry = CollectorRegistry()
        self.route_lookups = Counter(
            "tailrace_route_lookups", "GetRoute calls, by outcome", ["outcome"], registry=self.registry
        )
        live = Gauge("tailrace_live_brokers", "Brokers registered and not expired", registry=self.registry)
        live.set_function(lambda: float(live_brokers()))
        self.registry.register(_GroupCollector(groups))

    def serve(self, host: str, port: int, tls_files: tuple[str, str] | None = None) -> int:
        return serve_metrics(self.registry, host, port, tls_files)


class _GroupCollector(Collector):
    def __init__(self, groups: GroupCounts) -> None:
        self.groups = groups
        self.seen: dict[tuple[str, str], None] = {}  # insertion-ordered, bounded
        self._lock = threading.Lock()  # scrapes run in threads, and may overlap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.groups()
        with self._lock:
            for key in now:
                self.seen.pop(key, None)
                self.seen[key] = None
            while len(self.seen) > MAX_GROUPS_SEEN:
                del self.seen[next(iter(self.seen))]
            seen = list(self.seen)
        brokers = GaugeMetricFamily(
            "tailrace_group_brokers", "Live brokers of a broker group", labels=["cluster", "group"]
        )
        masters = GaugeMetricFamily(
            "tailrace_group_masters",
            "Live masters of a broker group (1 when healthy)",
            labels=["cluster", "group"],
        )
        known = GaugeMetricFamily(
            "tailrace_group_known_brokers",
            "Brokers of a broker group heard from in the last day, live or not (what it should have)",
            labels=["cluster", "group"],
        )
        for key in seen:
            n, m, k = now.get(key, (0, 0, 0))
            brokers.add_metric(list(key), float(n))
            masters.add_metric(list(key), float(m))
            known.add_metric(list(key), float(k))
        yield brokers
        yield masters
        yield known
