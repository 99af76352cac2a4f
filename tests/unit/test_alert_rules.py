"""The shipped alert rules evaluated by Prometheus' own `promtool` (Debian's
`prometheus` package; `make tools` installs it): each alert fires on a
synthetic bad series and stays quiet on a good one, the in-sync alert
included across an hour-long outage and a failover that lost a node
(review of issue 19, B6).

promtool compares annotations too; the rules are tested from a copy
without them (tests/helpers/promql.without_annotations): this checks when
alerts fire and with which labels, not their wording.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.promql import ALERTS, alert_rules, without_annotations

pytestmark = pytest.mark.unit

M = 'role="master"'
INFO_M = f'tailrace_broker_info{{instance="m:1",group="g",broker_id="0",{M}}}'
KNOWN_3 = ('tailrace_group_known_brokers{instance="ns:1",cluster="c",group="g"}', "3x200")

# alert -> [(name, input series [(series, values)], eval minute, expected alerts' labels)]
Case = tuple[str, list[tuple[str, str]], int, list[dict[str, str]]]
CASES: dict[str, list[Case]] = {
    "TailraceInSyncSetShrunk": [
        (
            "a slave down for 2 h: still firing after the hour the old rule looked back",
            [('tailrace_in_sync_slaves{instance="m:1"}', "2x10 1x150"), (INFO_M, "1x160"), KNOWN_3],
            130,
            [{"group": "g", "severity": "warning"}],
        ),
        (
            "a failover lost a node: the new master (a slave until then) has 1 of 2",
            [
                ('tailrace_in_sync_slaves{instance="m:1"}', "2x10"),  # the old master: gone
                (INFO_M, "1x10"),
                ('tailrace_in_sync_slaves{instance="s:1"}', "0x10 1x60"),
                ('tailrace_broker_info{instance="s:1",group="g",broker_id="1",role="slave"}', "1x10"),
                ('tailrace_broker_info{instance="s:1",group="g",broker_id="0",role="master"}', "_x10 1x60"),
                KNOWN_3,
            ],
            30,
            [{"group": "g", "severity": "warning"}],
        ),
        (
            "every slave in sync",
            [('tailrace_in_sync_slaves{instance="m:1"}', "2x150"), (INFO_M, "1x150"), KNOWN_3],
            130,
            [],
        ),
    ],
    "TailraceBrokerDown": [
        (
            "one of three brokers gone",
            [('tailrace_group_brokers{instance="ns:1",cluster="c",group="g"}', "3x5 2x60"), KNOWN_3],
            30,
            [{"cluster": "c", "group": "g", "severity": "warning"}],
        ),
        (
            "all three live",
            [('tailrace_group_brokers{instance="ns:1",cluster="c",group="g"}', "3x60"), KNOWN_3],
            30,
            [],
        ),
    ],
    "TailraceNoMaster": [
        (
            "no master",
            [('tailrace_group_masters{instance="ns:1",cluster="c",group="g"}', "1x5 0x30")],
            20,
            [{"cluster": "c", "group": "g", "severity": "critical"}],
        ),
        ("a master", [('tailrace_group_masters{instance="ns:1",cluster="c",group="g"}', "1x30")], 20, []),
    ],
    "TailraceDiskOverWatermark": [
        (
            "over",
            [
                ('tailrace_disk_used_ratio{instance="m:1"}', "0.96x10"),
                ('tailrace_disk_max_used_ratio{instance="m:1"}', "0.95x10"),
            ],
            5,
            [{"instance": "m:1", "severity": "critical"}],
        ),
        (
            "under",
            [
                ('tailrace_disk_used_ratio{instance="m:1"}', "0.5x10"),
                ('tailrace_disk_max_used_ratio{instance="m:1"}', "0.95x10"),
            ],
            5,
            [],
        ),
    ],
    "TailraceDiskNearWatermark": [
        (
            "near",
            [
                ('tailrace_disk_used_ratio{instance="m:1"}', "0.92x30"),
                ('tailrace_disk_max_used_ratio{instance="m:1"}', "0.95x30"),
            ],
            20,
            [{"instance": "m:1", "severity": "warning"}],
        ),
        (
            "far",
            [
                ('tailrace_disk_used_ratio{instance="m:1"}', "0.5x30"),
                ('tailrace_disk_max_used_ratio{instance="m:1"}', "0.95x30"),
            ],
            20,
            [],
        ),
    ],
    "TailraceReplicaFarBehind": [
        (
            "300 MB behind",
            [('tailrace_replica_lag_bytes{instance="m:1",slave="1"}', "300000000x20")],
            10,
            [{"instance": "m:1", "slave": "1", "severity": "warning"}],
        ),
        ("1 MB behind", [('tailrace_replica_lag_bytes{instance="m:1",slave="1"}', "1000000x20")], 10, []),
    ],
    "TailraceGroupLagGrowing": [
        (
            "growing from 2000",
            [('tailrace_consumer_lag_messages{instance="m:1",group="G",topic="T",queue="0"}', "2000+100x60")],
            40,
            [{"group": "G", "topic": "T", "severity": "warning"}],
        ),
        (
            "flat",
            [('tailrace_consumer_lag_messages{instance="m:1",group="G",topic="T",queue="0"}', "2000x60")],
            40,
            [],
        ),
        (
            "growing but small",
            [('tailrace_consumer_lag_messages{instance="m:1",group="G",topic="T",queue="0"}', "0+10x60")],
            40,
            [],
        ),
    ],
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: `make tools` installs Debian's prometheus package (it ships promtool)"
        )
    return found


def unit_tests(rules: Path) -> dict[str, Any]:
    tests = []
    for alert, cases in CASES.items():
        for _name, series, minute, expected in cases:
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [{"series": s, "values": v} for s, v in series],
                    "alert_rule_test": [
                        {
                            "eval_time": f"{minute}m",
                            "alertname": alert,
                            "exp_alerts": [{"exp_labels": labels} for labels in expected],
                        }
                    ],
                }
            )
    return {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}


def run_promtool(rules: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    stripped = tmp_path / "rules.yml"
    stripped.write_text(without_annotations(rules.read_text()))
    spec = tmp_path / "tests.yml"
    spec.write_text(json.dumps(unit_tests(stripped)))  # JSON is YAML
    return subprocess.run(
        [promtool(), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )


def test_the_rules_are_valid_prometheus_rules() -> None:
    r = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    for rule in alert_rules():
        cases = CASES.get(rule["alert"], [])
        assert any(c[3] for c in cases) and any(not c[3] for c in cases), rule["alert"]


def test_each_alert_fires_on_its_bad_series_and_not_on_its_good_one(tmp_path: Path) -> None:
    r = run_promtool(ALERTS, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
