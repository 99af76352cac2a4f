"""The shipped Grafana dashboard and Prometheus alert rules name only
metrics that exist: each expression's metric names (parsed from the
PromQL) against what a broker's and a nameserver's registries expose.
tests/integration/test_console.py checks the same against real processes'
/metrics."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest

from core.metrics import BrokerMetrics, NameserverMetrics
from tests.helpers.promql import (
    ALERTS,
    DASHBOARD,
    alert_rules,
    dashboard_exprs,
    exposed_samples,
    label_problems,
    metric_names,
    unknown_metrics,
)

pytestmark = pytest.mark.unit


def registered() -> set[str]:
    broker = BrokerMetrics(dict)  # an empty snapshot: every family, no samples from state
    nameserver = NameserverMetrics(lambda: 0)
    return exposed_samples(generate_latest(broker.registry).decode()) | exposed_samples(
        generate_latest(nameserver.registry).decode()
    )


def all_exprs() -> dict[str, str]:
    return {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_exprs()


def test_the_parser_finds_metric_names_and_nothing_else() -> None:
    assert metric_names(
        'sum by (group, topic) (delta(tailrace_consumer_lag_messages{group=~"a|b"}[10m])) > 0 '
        'and on (instance) tailrace_broker_info{role="master"}'
    ) == {"tailrace_consumer_lag_messages", "tailrace_broker_info"}
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(tailrace_append_seconds_bucket[5m])))"
    ) == {"tailrace_append_seconds_bucket"}
    assert metric_names("up == 0") == {"up"}  # not ours, still a metric: it must exist too
    assert metric_names("label_values(tailrace_messages_in_total, topic)") == {"tailrace_messages_in_total"}
    # a made-up name is caught
    assert unknown_metrics({"x": "rate(tailrace_nope_total[1m])"}, registered()) == {
        "x": {"tailrace_nope_total"}
    }


def test_every_metric_the_rules_and_the_dashboard_name_exists() -> None:
    exprs = all_exprs()
    assert all(metric_names(e) for e in exprs.values()), "an expression without a metric"
    assert unknown_metrics(exprs, registered()) == {}


def test_the_alert_rules_cover_what_issue_19_asks_and_are_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for needed in ("TailraceGroupLagGrowing", "TailraceInSyncSetShrunk", "TailraceDiskOverWatermark",
                   "TailraceNoMaster"):  # fmt: skip
        assert needed in names
    for r in rules:
        assert r.get("expr") and r.get("for") and r.get("severity") in ("warning", "critical"), r
        assert r.get("summary"), r


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] == "Tailrace"
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 10 and all(p["targets"] for p in panels)
    assert len({p["title"] for p in panels}) == len(panels)


def registered_labels() -> dict[str, set[str]]:
    """metric -> its label names, as a broker's and a nameserver's registries
    declare them (families without samples included; histograms add `le`)."""
    out: dict[str, set[str]] = {}
    for registry in (BrokerMetrics(dict).registry, NameserverMetrics(lambda: 0).registry):
        for collector in list(registry._collector_to_names):  # type: ignore[attr-defined]
            wrapped = getattr(collector, "_labelnames", None)
            if wrapped is not None:  # a Counter, Gauge or Histogram
                names = registry._collector_to_names[collector]  # type: ignore[attr-defined]
                for n in names:
                    out[n] = set(wrapped) | ({"le"} if n.endswith("_bucket") else set())
                continue
            for family in collector.collect():
                labels = set(getattr(family, "_labelnames", ()))
                for s in family.samples:
                    labels |= set(s.labels)
                out.setdefault(family.name, set()).update(labels)
    return out


def test_every_label_the_rules_and_the_dashboard_use_is_on_their_metrics() -> None:
    """Review: the test checked metric names only, so `role="master"` on a
    metric without `role`, or a `by (cluster)` over per-broker metrics,
    passed. Selectors' matchers, groupings and alert templates' $labels."""
    labels = registered_labels()
    assert labels["tailrace_broker_info"] == {"group", "broker_id", "role"}  # the reader works
    templates = {r["alert"]: ALERTS.read_text().split(f"alert: {r['alert']}")[1].split("- alert:")[0]
                 for r in alert_rules()}  # fmt: skip
    problems = {
        where: found
        for where, expr in all_exprs().items()
        if (found := label_problems(expr, labels, templates.get(where.removeprefix("alert "), "")))
    }
    assert problems == {}
    # and a wrong label is caught
    assert label_problems('tailrace_in_sync_slaves{role="master"}', labels) == [
        "tailrace_in_sync_slaves has no label ['role']"
    ]
    assert label_problems("max by (cluster) (tailrace_disk_used_ratio)", labels)
    assert label_problems("tailrace_disk_used_ratio > 1", labels, "{{ $labels.slave }}")
