"""Conformance: a cold backlog received by RocketMQ 5's official
SimpleConsumer (`rocketmq-python-client` 5.1.2, unmodified, in its own
process) through `tailrace proxy` is served from the slave's disk.

A secure cluster: one broker group, a master and an in-sync slave, a
page-cache budget pinned at 1 MiB (as issue 6's tests pin it) under a
~2.5 MiB backlog. The proxy pops with `bodies_elsewhere`: for the cold
part the master hands out ConsumeQueue entries and the proxy reads the
bodies from the slave. Every message must arrive whole and once; the slave
served the cold ones (its `tailrace_messages_out_total`, the proxy's own
count), the master read none of their bodies (its Status `popped`: read
elsewhere; and no pull served by it)."""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.harness import TailraceProcess, process_group
from deploy.waits import broker_status, wait_caught_up
from tests.helpers.rmq_setup import Setup, official

pytestmark = pytest.mark.integration
T = "cold-t"
COUNT = 600
BODY = 4000


@pytest.fixture(scope="module")
def rmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("rmqcold")
    with process_group(workdir / "run") as procs:
        pki = procs.secure()
        cluster = procs.cluster(("a",), slaves=1, topic=T, queues=2, extra=["--budget-bytes", str(1 << 20)])
        proxy = procs.proxy(cluster.namesrv)
        home = workdir / "home"
        home.mkdir()
        yield Setup(procs, pki, cluster, proxy, home)


def run(rmq: Setup, **spec: Any) -> dict[str, Any]:
    return official(rmq.home, rmq.pki.ca_file, rmq.spec(**spec), timeout_s=120)


def messages_out(rmq: Setup, node: TailraceProcess) -> float:
    """The broker's `tailrace_messages_out_total` of T: messages its pulls
    served (its metrics port speaks HTTPS with the cluster's CA)."""
    tls = ssl.create_default_context(cafile=str(rmq.pki.ca_file))
    url = f"https://{node.info['metrics_address']}/metrics"
    text = urllib.request.urlopen(url, timeout=5, context=tls).read().decode()
    for line in text.splitlines():
        if line.startswith(f'tailrace_messages_out_total{{topic="{T}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_cold_backlog_is_received_whole_from_the_slave(rmq: Setup) -> None:
    group = rmq.cluster.groups["a"]
    master, (slave,) = group.master, group.slaves
    bodies = [f"cold-{i:04d}-" + "x" * BODY for i in range(COUNT)]
    sent = run(rmq, mode="produce", topic=T, messages=[{"body": b, "tag": "c"} for b in bodies])
    assert all(r["ok"] for r in sent["results"]), sent["results"][:3]
    ids = [r["message_id"] for r in sent["results"]]
    wait_caught_up(master, [slave])
    slave_before, master_before = messages_out(rmq, slave), messages_out(rmq, master)

    out = run(
        rmq, mode="simple", topic=T, group="cold-g", expect=COUNT, plain=True, invisible_s=30, deadline_s=90
    )
    assert out["errors"] == "", out["errors"]
    assert out["acked"] == sorted(ids)  # every message received and acknowledged
    by_id: dict[str, list[dict[str, Any]]] = {}
    for x in out["deliveries"]:
        by_id.setdefault(x["id"], []).append(x)
    for body, message_id in zip(bodies, ids, strict=True):
        (got,) = by_id[message_id]  # once
        assert got["body"] == body and got["tag"] == "c" and not got["corrupted"]  # whole

    details = broker_status(master)["details"]
    popped = details["popped"]
    assert details["redirect"]["reasons"].get("backlog_over_budget", 0) > 0  # the pull's decision
    print("master popped:", popped, "advice:", details["redirect"]["reasons"])
    assert popped["here"] + popped["elsewhere"] == COUNT
    assert popped["elsewhere"] >= COUNT // 3, popped  # the cold part: its bodies never read by the master
    from_slave = messages_out(rmq, slave) - slave_before
    assert from_slave == popped["elsewhere"]  # the slave served every one of them
    assert messages_out(rmq, master) == master_before  # no fallback pull on the master
    rmq.proxy.stop()
    log = rmq.proxy.log_path.read_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    said = r"cold reads: bodies of popped messages so far: (\d+) in masters' pops, (\d+) from slaves, (\d+) "
    counts = re.findall(said + r"from masters' pulls", log)
    assert counts and counts[-1] == (str(popped["here"]), str(popped["elsewhere"]), "0"), counts
