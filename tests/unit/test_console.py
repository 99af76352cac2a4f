"""The console's plain parts: bounded chart history, the signed-request
check, the routing (no socket), and its config section."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.config import load_section
from core.errors import ConfigError
from core.security.acl import AclFile
from core.security.signing import sign
from deploy.console.collect import ConsoleData
from deploy.console.config import ConsoleSection
from deploy.console.history import Levels, Rates, TopicPicker
from deploy.console.server import ConsoleServer, check_request

pytestmark = pytest.mark.unit
SECRET = "0123456789abcdef-admin"
ACL = (
    f'[[account]]\naccess_key = "ops"\nsecret_key = "{SECRET}"\nadmin = true\n'
    '[[account]]\naccess_key = "app"\nsecret_key = "0123456789abcdef-app"\n'
    'publish = ["*"]\nsubscribe = ["*"]\n'
    '[[account]]\naccess_key = "watch"\nsecret_key = "0123456789abcdef-watch"\nmonitor = true\n'
)
NOW = 1_800_000_000_000
SKEW = 300_000


def acl_file(tmp_path: Path) -> AclFile:
    path = tmp_path / "acl.toml"
    path.write_text(ACL)
    path.chmod(0o600)
    return AclFile(path, NOW)


def signed(ak: str, sk: str, target: str, at: int = NOW, method: str = "GET") -> dict[str, str]:
    return {k.title(): v for k, v in sign(ak, sk, f"{method} {target}", at)}  # as HTTP headers arrive


def test_levels_keep_at_most_points_per_series_and_max_series() -> None:
    h = Levels(points=3, max_series=2)
    for i in range(5):
        h.add(1000 * i, {"a": i, "b": 10 * i, "c": 7})
    assert h.series() == {
        "a": [(2000, 2.0), (3000, 3.0), (4000, 4.0)],
        "b": [(2000, 20.0), (3000, 30.0), (4000, 40.0)],
    }
    assert h.refused == {"c"}  # past the cap: not charted, and said so
    for i in range(5, 9):  # "a" stops being sampled: forgotten after `points` samples, room for another
        h.add(1000 * i, {"b": 1, "c": 2})
    assert set(h.series()) == {"b", "c"}


def test_rates_from_counters_and_a_counter_that_goes_down_restarts() -> None:
    r = Rates(points=10, max_series=5)
    r.add(0, {"T": 100})
    assert r.series() == {}  # one sample is no rate yet
    r.add(2000, {"T": 300})
    r.add(4000, {"T": 300})
    r.add(5000, {"T": 50})  # went down (a failover to a slave behind, a re-created topic): no point
    r.add(6000, {"T": 150})
    assert r.series() == {"T": [(2000, 100.0), (4000, 0.0), (6000, 100.0)]}
    doc = r.to_json()
    assert doc["series"] == {"T": [[2000, 100.0], [4000, 0.0], [6000, 100.0]]}


def test_rates_memory_is_bounded_whatever_the_topics() -> None:
    r = Rates(points=4, max_series=3)
    for i in range(50):
        r.add(1000 * i, {f"t{j}": i * j for j in range(1000)})
    assert len(r.series()) == 3 and all(len(p) <= 4 for p in r.series().values())
    assert len(r._last) <= 3 and len(r.refused) <= 3


def test_the_console_accepts_only_requests_signed_by_an_admin_or_a_monitor(tmp_path: Path) -> None:
    acl = acl_file(tmp_path)
    ok = signed("ops", SECRET, "/api/state")
    assert check_request(ok, "GET", "/api/state", acl, NOW, SKEW) == (200, "ops")
    status, why = check_request({}, "GET", "/api/state", acl, NOW, SKEW)
    assert status == 401 and "sign in" in why
    # a signature covers the path (and query): one seen for /api/rates opens nothing else
    assert check_request(signed("ops", SECRET, "/api/rates"), "GET", "/api/state", acl, NOW, SKEW)[0] == 401
    assert check_request(ok, "GET", "/api/groups?group=G", acl, NOW, SKEW)[0] == 401
    # nor does a gRPC call's header (its method path starts with "/", never with "GET ")
    grpc_header = {k: v for k, v in sign("ops", SECRET, "/tailrace.v1.BrokerAdmin/DescribeGroups", NOW)}
    assert check_request(grpc_header, "GET", "/api/state", acl, NOW, SKEW)[0] == 401
    assert check_request(signed("ops", "wrong", "/api/state"), "GET", "/api/state", acl, NOW, SKEW)[0] == 401
    assert (
        check_request(signed("nobody", SECRET, "/api/state"), "GET", "/api/state", acl, NOW, SKEW)[0] == 401
    )
    stale = signed("ops", SECRET, "/api/state", at=NOW - SKEW - 1)
    assert check_request(stale, "GET", "/api/state", acl, NOW, SKEW)[0] == 401
    app = signed("app", "0123456789abcdef-app", "/api/state")
    status, why = check_request(app, "GET", "/api/state", acl, NOW, SKEW)
    assert status == 403 and "neither a monitor nor an admin" in why
    # a monitor account (the console's own, review R1) signs in: it reads what the console shows
    watch = signed("watch", "0123456789abcdef-watch", "/api/state")
    assert check_request(watch, "GET", "/api/state", acl, NOW, SKEW) == (200, "watch")
    # no accounts configured: open, as the client RPCs are (loopback or --insecure only)
    assert check_request({}, "GET", "/api/state", None, NOW, SKEW)[0] == 200


class FakeData:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def view(self, part: str) -> dict[str, Any]:
        self.asked.append(part)
        queues = [{"group": "G", "queue_id": 0}, {"group": "H", "queue_id": 0}]
        return {"groups": {"queues": queues, "groups": [{"group": "G"}, {"group": "H"}]}, "part": part}


def test_routing_static_files_api_and_refusals(tmp_path: Path) -> None:
    data = FakeData()
    server = ConsoleServer(data, "127.0.0.1", 0, None, acl_file(tmp_path), SKEW, lambda: NOW)  # type: ignore[arg-type]
    try:
        status, ctype, body = server.answer("GET", "/", {})
        assert status == 200 and ctype.startswith("text/html") and b"/console.js" in body
        assert b"http" not in body.replace(b"http://www.w3.org", b"")  # nothing from elsewhere: works offline
        assert server.answer("GET", "/console.js", {})[0] == 200
        assert (
            server.answer("GET", "/api/state", {})[0] == 401 and data.asked == []
        )  # refused before any data
        assert (
            server.answer("POST", "/api/state", signed("ops", SECRET, "/api/state", method="POST"))[0] == 405
        )
        assert server.answer("GET", "/api/nope", {})[0] == 404
        target = "/api/groups?group=G"
        status, _, body = server.answer("GET", target, signed("ops", SECRET, target))
        assert status == 200 and data.asked == ["groups"]
        assert [q["group"] for q in json.loads(body)["groups"]["queues"]] == ["G"]
    finally:
        server.httpd.server_close()


def test_the_static_page_loads_nothing_from_elsewhere() -> None:
    from deploy.console.server import static_file

    for name in ("index.html", "console.js", "console.css"):
        text = static_file(name).decode()
        for marker in ("https://", "//cdn", "@import", "googleapis"):
            assert marker not in text, (name, marker)
    assert "innerHTML" not in static_file("console.js").decode()  # data goes in as text only


def test_console_section_defaults_off_and_checks_its_keys() -> None:
    assert load_section(ConsoleSection, {}, "console").listen == ""
    with pytest.raises(ConfigError, match=r"console\.listen"):
        load_section(ConsoleSection, {"listen": "nope"}, "console")
    with pytest.raises(ConfigError, match=r"console\.refresh_ms"):
        load_section(ConsoleSection, {"refresh_ms": 1}, "console")
    with pytest.raises(ConfigError, match=r"console\.history_points"):
        load_section(ConsoleSection, {"history_points": 10**6}, "console")


class FakeOffsets:
    """A cluster of one master whose topics hold `counts` messages each, recording what is asked."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked: list[str] = []
        conn = SimpleNamespace(stub=SimpleNamespace(GetQueueOffsets=object()), call=self.call)
        self.admin = SimpleNamespace(
            list_topics=lambda: dict.fromkeys(counts, 1), pool=SimpleNamespace(get=lambda a: conn)
        )

    def call(self, method: Any, req: Any, timeout_s: float | None = None) -> Any:
        self.asked.append(req.topic)
        return SimpleNamespace(queues=[SimpleNamespace(max_offset=self.counts[req.topic])])


CLUSTER = {"clusters": [{"groups": [{"master": "m:1"}]}]}


def test_broker_topics_do_not_crowd_user_topics_out_of_the_rates_chart() -> None:
    """Review B2: the cut to max_topics_sampled came before the `%` topics
    were skipped, and `%` sorts first: four of them took all four slots and
    `orders` was never asked for, with nothing saying so."""
    cluster = FakeOffsets({f"%RETRY%g{i}": 1 for i in range(3)} | {"%DLQ%g0": 1, "orders": 0})
    data = ConsoleData(ConsoleSection(max_topics_sampled=4), cluster.admin, lambda: {})  # type: ignore[arg-type]
    for i in range(3):
        cluster.counts["orders"] = 100 * i
        data._sample(1000 * i, CLUSTER, {})
    assert set(cluster.asked) == {"orders"}  # only the user topic, each refresh
    assert data.rates.to_json()["series"] == {"orders": [[1000, 100.0], [2000, 100.0]]}


def test_the_busiest_topics_are_sampled_and_the_rest_are_named() -> None:
    """Past the cap: the busiest by their last rate, a turning slot finds a
    topic that got busy, and /api says which topics were left out."""
    names = [f"t{i}" for i in range(8)]
    cluster = FakeOffsets(dict.fromkeys(names, 0))
    data = ConsoleData(ConsoleSection(max_topics_sampled=4), cluster.admin, lambda: {})  # type: ignore[arg-type]
    for i in range(12):  # t7 (last by name) is the one busy topic
        cluster.counts["t7"] = 50 * i
        cluster.asked.clear()
        data._sample(1000 * i, CLUSTER, {})
    assert len(cluster.asked) == 4 and "t7" in cluster.asked  # found, and kept every refresh since
    rates = data.view("rates")["rates"]
    assert rates["series"]["t7"][-1] == [11000, 50.0]
    assert rates["not_sampled_count"] == 4 and len(rates["not_sampled"]) == 4
    assert "t7" not in rates["not_sampled"]


def test_the_topic_picker_turns_through_idle_topics() -> None:
    picker = TopicPicker(2)
    seen: set[str] = set()
    for now in range(4):
        chosen = picker.pick(["a", "b", "c", "d", "%SYS"])
        assert len(chosen) == 2 and "%SYS" not in chosen
        seen.update(chosen)
        picker.sampled(now * 1000, dict.fromkeys(chosen, 0))
    assert seen == {"a", "b", "c", "d"}  # every idle topic had its turn
    assert TopicPicker(0).pick(["a"]) == [] and TopicPicker(5).pick(["%x", "b"]) == ["b"]


def test_a_broker_group_with_no_live_broker_keeps_its_card_as_unreachable() -> None:
    """Review B4: the registry listed live groups only, so a group entirely
    down lost its card. The registry now lists it with no brokers, and the
    card says `unreachable`."""
    from core.route import BrokerEndpoint, GroupRoute
    from deploy.console.collect import group_state

    up = GroupRoute("a", "c", 0, 0, "rw", (BrokerEndpoint(0, "a:1", "master", 1, True, 0),))
    down = GroupRoute("b", "c", 0, 0, "")
    status = SimpleNamespace(role="master", max_offset=0, details_json="{}")
    conn = SimpleNamespace(stub=SimpleNamespace(Status=object()), call=lambda *a, **k: status)
    admin = SimpleNamespace(pool=SimpleNamespace(get=lambda a: conn))
    data = ConsoleData(ConsoleSection(), admin, lambda: {"c": [up, down]})  # type: ignore[arg-type]
    cards = {g["broker_name"]: g for g in data._cluster({})["clusters"][0]["groups"]}
    assert (cards["a"]["state"], cards["b"]["state"]) == ("ok", "unreachable")
    assert cards["b"]["master"] is None and cards["b"]["brokers"] == []
    slave = {"broker_id": 1}
    assert group_state([{"broker_id": 0, "error": "x"}, slave]) == "no_master"
    assert group_state([{"broker_id": 0}, {"broker_id": 1, "error": "x"}]) == "degraded"


def test_a_stalled_broker_does_not_freeze_the_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review R5: the refresh asked every broker in turn, with no deadline: a
    master that accepts connections and never answers (a GC stall, SIGSTOP)
    held it for every call's timeout, Status, DescribeGroups and each
    topic's offsets. Now brokers are asked at once under one deadline; the
    stalled one is marked late and the others' answers are shown."""
    import time

    import deploy.console.collect as collect
    from core.errors import RequestTimeoutError
    from core.route import BrokerEndpoint, GroupRoute

    def call(address: str) -> Any:
        def answer(method: Any, req: Any, timeout_s: float | None = None) -> Any:
            if address.startswith("stalled"):
                time.sleep(min(timeout_s or 5.0, 5.0))  # answers nothing: the client's timeout ends it
                raise RequestTimeoutError("DEADLINE_EXCEEDED")
            if isinstance(req, collect.pb.StatusRequest):
                return SimpleNamespace(role="master", max_offset=0, details_json="{}")
            return SimpleNamespace(queues=[SimpleNamespace(max_offset=7)])

        return SimpleNamespace(stub=SimpleNamespace(Status=object(), GetQueueOffsets=object()), call=answer)

    def stalled_describe(admin: Any) -> dict[str, Any]:
        time.sleep(3.0)
        return {"groups": [], "queues": []}

    monkeypatch.setattr(collect, "describe_groups", stalled_describe)
    routes = {
        "c": [
            GroupRoute(n, "c", 0, 0, "rw", (BrokerEndpoint(0, f"{n}:1", "master", 1, True, 0),))
            for n in ("ok", "stalled")
        ]
    }
    admin = SimpleNamespace(pool=SimpleNamespace(get=call), list_topics=lambda: {"T": 1, "U": 1})
    data = ConsoleData(ConsoleSection(deadline_ms=500), admin, lambda: routes)  # type: ignore[arg-type]
    data._viewed_ms = data.clock_ms()  # someone looks: groups are described
    try:
        for _ in range(2):
            began = time.monotonic()
            data.refresh()
            assert time.monotonic() - began < 1.5  # (the old code: 2 s Status + 3 s describe + 5 s per topic)
        state = data.view("cluster")  # (not "state": that would wait for the describe)
        cards = {g["broker_name"]: g for g in state["cluster"]["clusters"][0]["groups"]}
        assert cards["ok"]["state"] == "ok" and cards["stalled"]["state"] == "unreachable"
        (row,) = cards["stalled"]["brokers"]
        assert row["late"] and row["error"] == collect.LATE
        assert state["errors"]["groups"].startswith("late") and "rates" in state["errors"]
        assert data._describing is not None  # the second refresh waited for the first describe, not a new one
    finally:
        data.stop()
