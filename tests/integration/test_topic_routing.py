"""Topics and their routes through the nameservers (issue 14), real processes.

A broker registers as soon as its topics change (however they change), so
`topic create --namesrv` returns with the topic routed (or says what is not);
a consumer waits for a topic that is not routed yet (until its timeout); a
producer's unknown topic is auto-created on a master that allows it, or
refused at once when none does.

Brokers here register every 60 s unless told otherwise, so a route that
appears within a few seconds came from the registration its topic change
caused, not from a heartbeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from consumer import Admin, Producer
from consumer.connection import BrokerConnection
from core.pb.tailrace.v1 import broker_pb2 as pb
from deploy.harness import ProcessGroup
from deploy.waits import master_groups, poll_until, route_of, wait_routed
from tests.helpers.cli import ROOT, cli

pytestmark = pytest.mark.integration
SLOW_HB_MS = 60_000  # registrations: one at start, then only what topic changes cause
FAST_HB_MS = 200
SECRET = ["--set", "replication.secret=test-secret", "--set", 'broker.retry_delays="100ms"']


def unknown_topic_lookups(procs: ProcessGroup, nameserver: str = "ns0") -> float:
    """How many route lookups the nameserver answered with UNKNOWN_TOPIC."""
    url = f"http://{procs.processes[nameserver].info['metrics_address']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return float(values.get('tailrace_route_lookups_total{outcome="unknown_topic"}', 0))


def test_topic_create_returns_routed_and_a_consumer_started_right_after_reads_it(
    procs: ProcessGroup,
) -> None:
    c = procs.cluster(("ga", "gb"), heartbeat_ms=SLOW_HB_MS)
    ns = ",".join(c.namesrv)
    r = cli("topic", "create", "--namesrv", ns, "--topic", "T", "--queues", "4")
    assert r.returncode == 0, r.stderr
    route = route_of(c.namesrv, "T")  # as soon as the command returned
    assert route is not None, "topic create returned before the topic was routed"
    assert master_groups(route) == ["ga", "gb"] and len(route.write_queues()) == 8
    with Producer(namesrv=c.namesrv) as prod:
        for i in range(40):
            prod.send("T", f"run:{i}:".encode())
    r = cli(
        "consume", "--namesrv", ns, "--group", "G", "--topic", "T", "--count", "40",
        "--timeout-ms", "30000", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["unique"] == 40


def test_topic_create_names_what_is_not_routed_at_its_deadline(procs: ProcessGroup) -> None:
    ns0, ns1 = procs.nameserver("ns0").address, procs.nameserver("ns1").address
    procs.broker("g", namesrv=[ns0], heartbeat_ms=SLOW_HB_MS)  # never registers with ns1
    r = cli("topic", "create", "--namesrv", f"{ns0},{ns1}", "--topic", "T", "--route-timeout-ms", "1000")
    assert r.returncode == 1
    assert f"nameserver {ns1} has no route to it" in r.stderr and ns0 not in r.stderr, r.stderr


def test_every_way_a_broker_gets_a_topic_reaches_the_routes_at_once(procs: ProcessGroup) -> None:
    ns = [procs.nameserver("ns0").address]
    rs = procs.replica_set("g", 1, extra=SECRET, namesrv=ns, heartbeat_ms=SLOW_HB_MS)
    # auto-created by a send
    with Producer(rs.master.address) as prod:
        prod.send("auto", b"x")
    wait_routed(ns, "auto", groups=["g"], timeout_s=10)
    # created by the broker itself for a message sent back: the dead-letter
    # topic at once, the schedule topic, then the scheduler's retry topic
    conn = BrokerConnection(rs.master.address)
    try:
        for max_reconsume in (0, 1):
            req = pb.SendBackRequest(
                group="G", topic="auto", message=pb.Message(body=b"x"), max_reconsume=max_reconsume
            )
            conn.call(conn.stub.SendBack, req)
    finally:
        conn.close()
    for topic in ("%DLQ%G", "%SCHEDULE%", "%RETRY%G"):
        wait_routed(ns, topic, groups=["g"], timeout_s=10)
    # replicated to the slave: with the master gone (unregistered), the
    # slave's own registration still routes the topic
    with Admin(rs.slaves[0].address) as slave:
        poll_until(lambda: "auto" in slave.list_topics(), 10, "the topic on the slave")
    rs.master.stop()
    poll_until(
        lambda: (
            (r := route_of(ns, "auto")) is not None
            and [b.broker_id for g in r.groups for b in g.brokers] == [1]
        ),
        10,
        "the route of 'auto' from the slave's registration alone",
    )


def test_a_consumer_waits_for_its_topic_to_be_routed(procs: ProcessGroup) -> None:
    c = procs.cluster(("g",), heartbeat_ms=FAST_HB_MS)
    ns = ",".join(c.namesrv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "consume", "--namesrv", ns, "--group", "G", "--topic", "later",
         "--count", "10", "--timeout-ms", "60000", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        poll_until(
            lambda: unknown_topic_lookups(procs) >= 3 or proc.poll() is not None,
            30,
            "the consumer asking for the route again and again",
        )
        assert proc.poll() is None, "the consumer exited instead of waiting for its topic"
        with Producer(c.groups["g"].master.address) as prod:  # the broker auto-creates it
            for i in range(10):
                prod.send("later", f"run:{i}:".encode())
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["unique"] == 10


def test_a_consumer_gives_up_at_its_timeout_naming_the_topic_and_nameservers(procs: ProcessGroup) -> None:
    c = procs.cluster(("g",), heartbeat_ms=FAST_HB_MS)
    ns = ",".join(c.namesrv)
    t0 = time.monotonic()
    r = cli("consume", "--namesrv", ns, "--group", "G", "--topic", "never", "--count", "1",
            "--timeout-ms", "2000")  # fmt: skip
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert took >= 2.0, f"gave up after {took:.1f} s, before its timeout: {r.stderr}"
    assert "'never'" in r.stderr and c.namesrv[0] in r.stderr, r.stderr


def test_produce_through_a_nameserver_auto_creates_on_a_master_that_allows_it(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    ns = [procs.nameserver("ns0").address]
    procs.broker("ga", namesrv=ns, heartbeat_ms=SLOW_HB_MS)
    no_auto = ["--set", "broker.auto_create_topics=false"]
    procs.broker("gb", namesrv=ns, heartbeat_ms=SLOW_HB_MS, extra=no_auto)
    with Admin(namesrv=ns) as admin:
        poll_until(lambda: sorted(admin.masters()) == ["ga", "gb"], 30, "both groups registered")
    r = cli("produce", "--namesrv", ns[0], "--topic", "new-topic", "--count", "20", "--batch", "5",
            "--json", timeout=120)  # fmt: skip
    summary = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 0 and summary["ok"] == 20, (summary, r.stderr)
    assert summary["seconds"] < 10, summary
    # only the group that creates topics on first send has it; its route came at once
    wait_routed(ns, "new-topic", groups=["ga"], timeout_s=10)
    with Admin(procs.processes["gb"].address) as admin:
        assert "new-topic" not in admin.list_topics()


def test_produce_through_a_nameserver_refuses_an_unknown_topic_no_broker_creates(
    procs: ProcessGroup,
) -> None:
    c = procs.cluster(("g",), heartbeat_ms=FAST_HB_MS, extra=["--set", "broker.auto_create_topics=false"])
    t0 = time.monotonic()
    r = cli("produce", "--namesrv", c.namesrv[0], "--topic", "nope", "--count", "3", timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert took < 10, f"took {took:.1f} s to give up"
    assert "topic 'nope' does not exist; create it with `tailrace topic create`" in r.stderr, r.stderr
