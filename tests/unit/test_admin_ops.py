"""The admin commands across broker groups (consumer/admin_ops.py) against
a fake cluster: nameserver answers and BrokerAdmin calls as plain objects,
so partial outcomes (a group failing between two others, a group with no
live broker) are set up exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from consumer import admin_ops as ops
from core.errors import BrokerUnavailableError, GroupActiveError, InvalidArgumentError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import nameserver_pb2 as ns
from core.route import BrokerEndpoint, GroupRoute, TopicRoute

pytestmark = pytest.mark.unit
Handler = Callable[[str, Any], Any]  # (method, request) -> answer, or raises


class FakeCluster:
    """Broker groups `a`, `b`, ... each a master at `<name>:1`; `down`:
    groups the nameserver knows with no live broker. `calls` records
    (address, method, dry run) in order."""

    def __init__(self, names: list[str], down: tuple[str, ...] = (), handler: Handler | None = None) -> None:
        self.names = names
        self.down = down
        self.handler = handler or (lambda address, req: None)
        self.calls: list[tuple[str, str, bool]] = []
        live = [
            GroupRoute(n, "c", 2, 2, "rw", (BrokerEndpoint(0, f"{n}:1", "master", 1, True, 0),))
            for n in names
        ]
        self.routes = SimpleNamespace(
            get=lambda topic, refresh=False: TopicRoute(topic, tuple(live)),
            clusters=lambda: ns.ListClustersResponse(
                clusters=[
                    ns.ClusterInfo(
                        name="c",
                        groups=[
                            ns.GroupRoute(
                                broker_name=n,
                                cluster="c",
                                brokers=[
                                    ns.BrokerRoute(broker_id=0, address=f"{n}:1", role="master", alive=True)
                                ],
                            )
                            for n in names
                        ]
                        + [ns.GroupRoute(broker_name=n, cluster="c") for n in down],
                    )
                ]
            ),
        )
        self.pool = SimpleNamespace(get=self.conn)

    def conn(self, address: str) -> Any:
        def call(method: str, request: Any, timeout_s: float | None = None) -> Any:
            self.calls.append((address, method, bool(getattr(request, "dry_run", False))))
            answer = self.handler(address, request)
            if answer is not None:
                return answer
            return self.default(address, method, request)

        stub = SimpleNamespace(ResetOffset="ResetOffset", DescribeGroups="DescribeGroups")
        return SimpleNamespace(admin_stub=stub, stub=stub, call=call, address=address)

    def default(self, address: str, method: str, request: Any) -> Any:
        name = address.split(":")[0]
        if method == "ResetOffset":
            queues = [
                pb.ResetQueue(queue_id=q, committed=True, old_offset=10, new_offset=0, max_offset=10)
                for q in range(2)
            ]
            return pb.ResetOffsetResponse(queues=queues, applied=not request.dry_run, broker_name=name)
        return pb.DescribeGroupsResponse(
            queues=[
                pb.GroupQueue(
                    group="G", topic="T", queue_id=0, max_offset=5, committed=True, committed_offset=2
                )
            ],
            broker_name=name,
        )


def admin_of(cluster: FakeCluster) -> Any:
    return SimpleNamespace(routes=cluster.routes, pool=cluster.pool)


def test_a_reset_that_fails_on_one_broker_group_says_which_groups_were_reset() -> None:
    """Review B3: a consumer started after the dry runs; broker group b's
    master then refused (GROUP_ACTIVE) after a had been reset. The command
    raised a refusal that elsewhere means "nothing was reset". Now every
    group is tried and each says what happened."""

    def member_on_b(address: str, req: Any) -> Any:
        if address == "b:1" and not req.dry_run:
            raise GroupActiveError("group 'G' has 1 live member(s) on 'T' (c1): stop them first, or force it")
        return None

    cluster = FakeCluster(["a", "b", "c"], handler=member_on_b)
    out = ops.reset_offset(admin_of(cluster), "G", "T", "earliest")
    assert not out["applied"] and out["not_reset"] == ["b"]
    assert {n: g["status"] for n, g in out["groups"].items()} == {"a": "reset", "b": "failed", "c": "reset"}
    assert "GROUP_ACTIVE" in out["groups"]["b"]["why"]
    assert {(r["broker_name"], r["applied"]) for r in out["plan"]} == {("a", True), ("b", False), ("c", True)}
    assert [a for a, _m, dry in cluster.calls if not dry] == ["a:1", "b:1", "c:1"]  # every group tried


def test_a_reset_refuses_before_any_change_when_a_broker_group_has_no_live_broker() -> None:
    """Review B4: a group with no live broker was not in the routes, so the
    reset reported `applied` for the others and the missing group kept its
    old offsets, with no warning. Now: refused, nothing written; with
    skip_unreachable, the others are reset and the missing one reported."""
    cluster = FakeCluster(["a"], down=("b",))
    with pytest.raises(BrokerUnavailableError, match=r"b \(no live broker.*nothing was reset"):
        ops.reset_offset(admin_of(cluster), "G", "T", "earliest")
    assert all(dry for _a, _m, dry in cluster.calls)  # dry runs only
    out = ops.reset_offset(admin_of(cluster), "G", "T", "earliest", skip_unreachable=True)
    assert out["groups"]["a"]["status"] == "reset" and out["groups"]["b"]["status"] == "unreachable"
    assert out["not_reset"] == ["b"] and not out["applied"]
    dry = ops.reset_offset(admin_of(cluster), "G", "T", "earliest", dry_run=True)  # a dry run shows it
    assert dry["groups"]["b"]["status"] == "unreachable" and dry["not_reset"] == []


def test_describe_lists_a_broker_group_with_no_live_broker_as_unreachable() -> None:
    cluster = FakeCluster(["a"], down=("b",))
    out = ops.describe_groups(admin_of(cluster))
    assert [q["broker_name"] for q in out["queues"]] == ["a"]
    assert list(out["unreachable"]) == ["b"] and not out["complete"]
    assert ops.describe_groups(admin_of(FakeCluster(["a"])))["complete"]


def test_the_cli_says_which_groups_were_not_reset_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deploy import admin_cli

    def member_on_b(address: str, req: Any) -> Any:
        if address == "b:1" and not req.dry_run:
            raise GroupActiveError("a member came")
        return None

    out = ops.reset_offset(admin_of(FakeCluster(["a", "b"], handler=member_on_b)), "G", "T", "latest")
    admin_cli._show_group(out)
    printed = capsys.readouterr()
    assert "PARTLY reset" in printed.out and "APPLIED" in printed.out
    assert "broker group b: failed: GROUP_ACTIVE: a member came" in printed.err
    assert "NOT reset on b; the other groups were" in printed.err
    assert admin_cli.exit_status(out) == 1
    assert admin_cli.exit_status(ops.reset_offset(admin_of(FakeCluster(["a"])), "G", "T", "latest")) == 0


def test_a_time_without_a_zone_is_local_like_every_time_the_cli_prints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review B8: a naive --to-time was UTC while describe and message get
    print local times: copying one across was off by the UTC offset. Now
    local (as mqadmin and Kafka read it), mqadmin's format is accepted, and
    the plan shows the instant resolved."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30, no daylight saving
    time.tzset()
    try:
        utc_noon = 1_769_860_800_000  # 2026-01-31T12:00:00Z
        assert ops.parse_time("2026-01-31T17:30:00") == utc_noon
        assert ops.parse_time("2026-01-31#17:30:00:000") == utc_noon
        assert (
            ops.parse_time("2026-01-31T12:00:00Z") == ops.parse_time("2026-01-31T12:00:00+00:00") == utc_noon
        )
        with pytest.raises(InvalidArgumentError):
            ops.parse_time("yesterday")
        out = ops.reset_offset(
            admin_of(FakeCluster(["a"])), "G", "T", "time", timestamp_ms=utc_noon, dry_run=True
        )
        assert out["instant"] == {
            "utc": "2026-01-31T12:00:00.000+00:00",
            "local": "2026-01-31T17:30:00.000+05:30",
        }
    finally:
        monkeypatch.undo()
        time.tzset()
