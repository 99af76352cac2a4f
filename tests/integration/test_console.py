"""The nameserver's web console against real processes: what it serves,
and that its data is for admin and monitor accounts only. As in test_security.py, the
request is first made where it works (a development cluster without
accounts: an unsigned request gets the cluster's data), which proves it a
real one, and then against a secure cluster, where it is refused."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from consumer import Producer, PullConsumer
from deploy.harness import ProcessGroup
from deploy.pki import CONSOLE, PROXY
from deploy.waits import poll_until
from tests.helpers.cli import cli, cli_json
from tests.helpers.console import console_get
from tests.helpers.promql import alert_rules, dashboard_exprs, exposed_samples, unknown_metrics

pytestmark = pytest.mark.integration


def test_without_accounts_an_unsigned_request_gets_the_data(procs: ProcessGroup) -> None:
    c = procs.cluster(("g",), topic="T", queues=2, console=True)
    url = procs.processes["ns0"].info["console_url"]
    assert url.startswith("http://127.0.0.1:")
    master = c.groups["g"].master.address
    status, body = console_get(url, "/api/cluster")
    assert status == 200, body

    def groups() -> list[dict[str, object]]:  # a snapshot, refreshed every console.refresh_ms
        return [g for c in console_get(url, "/api/cluster")[1]["cluster"]["clusters"] for g in c["groups"]]

    poll_until(groups, 30, "the broker group in the console")
    (group,) = groups()
    assert (group["broker_name"], group["master"]) == ("g", master)

    # the alert rules and the dashboard name only metrics these processes serve
    served: set[str] = set()
    for proc in (c.groups["g"].master, procs.processes["ns0"]):
        with urllib.request.urlopen(f"http://{proc.info['metrics_address']}/metrics", timeout=10) as r:
            served |= exposed_samples(r.read().decode())
    exprs = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_exprs()
    assert unknown_metrics(exprs, served) == {}


def test_with_accounts_the_console_is_for_admin_and_monitor_accounts_only(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    pki = procs.secure()
    c = procs.cluster(("g",), slaves=1, topic="T", queues=2, console=True)
    url = procs.processes["ns0"].info["console_url"]
    assert url.startswith("https://127.0.0.1:")  # the nameserver's certificate, the cluster's CA
    ca = pki.ca_file
    with Producer(namesrv=c.namesrv, profile=pki.profile_file) as producer:
        producer.send_batch("T", [b"x"] * 10)
    with PullConsumer(namesrv=c.namesrv, group="G", topic="T", profile=pki.profile_file) as consumer:
        consumer.poll(500)

    # the same request that got the data above: refused, and it carries none
    for path in ("/api/state", "/api/cluster", "/api/groups", "/api/rates"):
        status, body = console_get(url, path, ca)
        assert status == 401 and set(body) == {"error"}, (path, body)
    status, body = console_get(url, "/api/state", ca, (PROXY, pki.proxy_secret))  # an account, not admin
    assert status == 403 and "neither a monitor nor an admin" in body["error"]
    status, body = console_get(url, "/api/state", ca, ("admin", "not-the-secret"))
    assert status == 401 and set(body) == {"error"}
    # an admin's signed request gets it: brokers with roles, the in-sync set, the group's queues
    admin = ("admin", pki.admin_secret)

    def group_seen() -> bool:
        return any(
            q["group"] == "G" for q in console_get(url, "/api/groups", ca, admin)[1]["groups"]["queues"]
        )

    poll_until(group_seen, 30, "group G in the console")

    def brokers() -> list[tuple[int, str]]:
        body = console_get(url, "/api/state", ca, admin)[1]
        return [(b["broker_id"], b["role"]) for c in body["cluster"]["clusters"] for g in c["groups"]
                for b in g["brokers"]]  # fmt: skip

    poll_until(lambda: brokers() == [(0, "master"), (1, "slave")], 30, "the master and its slave")
    poll_until(lambda: console_get(url, "/api/cluster", ca, admin)[1]["cluster"]["clusters"][0]["groups"][0]
               ["in_sync"] == [1], 30, "the slave in sync")  # fmt: skip
    status, one = console_get(url, "/api/groups?group=G", ca, admin)
    assert status == 200 and {q["group"] for q in one["groups"]["queues"]} == {"G"}
    assert {q["queue_id"] for q in one["groups"]["queues"]} == {0, 1}
    # read-only: nothing but GET, even signed
    assert console_get(url, "/api/state", ca, admin, method="POST")[0] == 405
    # the page itself holds no data and loads without an account
    status, page = console_get(url, "/", ca)
    assert status == 200 and b"console.js" in page

    # least privilege (review R1): the console's own account, whose key sits in DIR/console.toml and
    # in the nameserver, and which an operator may type into the page, reads but writes nothing
    monitor = (CONSOLE, pki.console_secret)
    status, body = console_get(url, "/api/state", ca, monitor)
    assert status == 200 and any(g["group"] == "G" for g in body["groups"]["groups"]), body
    as_console = ["--profile", str(pki.console_profile_file), "--namesrv", ",".join(c.namesrv)]
    offsets = [
        (q["queue_id"], q["committed_offset"])
        for q in cli_json("group", "describe", "G", *as_console)["queues"]
    ]
    assert offsets  # the reads it needs
    for args in (
        ("group", "reset-offset", "G", "--topic", "T", "--to-earliest", "--force"),
        ("message", "find", "--topic", "T", "--key", "k"),  # message bodies are data, not monitoring
        ("topic", "delete", "T", "--force"),
    ):
        r = cli(*args, *as_console, "--json")
        assert r.returncode != 0 and "PERMISSION_DENIED" in r.stderr, (args, r.stdout, r.stderr)
    after = cli_json("group", "describe", "G", "--profile", str(pki.profile_file))["queues"]
    assert [(q["queue_id"], q["committed_offset"]) for q in after] == offsets  # nothing was reset


def test_a_console_on_a_non_loopback_address_needs_tls_and_accounts(tmp_path: Path) -> None:
    r = cli("nameserver", "--listen", "127.0.0.1:0", "--set", "console.listen=0.0.0.0:0", timeout=60)
    assert r.returncode == 2 and "console.listen" in r.stdout + r.stderr, r.stdout + r.stderr
