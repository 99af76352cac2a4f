"""What a user of the command-line clients sees when brokers are not where
the clients expect them (issue 14): real broker processes, the `tailrace`
command as a child process, deadlines polled, never slept."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from consumer import Admin, Producer
from deploy.harness import ProcessGroup
from deploy.waits import broker_status, max_offset, poll_until, wait_caught_up
from tests.helpers.cli import ROOT, cli_json

pytestmark = pytest.mark.integration


def test_consume_from_a_slave_reads_there_and_commits_on_the_master(procs: ProcessGroup) -> None:
    rs = procs.replica_set("m", slaves=1, extra=["--set", "replication.secret=s"])
    with Admin(rs.master.address) as admin:
        admin.create_topic("T", 2)
    with Producer(rs.master.address) as prod:
        for q in range(2):
            prod.send_batch("T", [f"m-{q}-{i}".encode() for i in range(50)], queue_id=q)
    wait_caught_up(rs.master, rs.slaves)
    slave = rs.slaves[0]
    out = cli_json(
        "consume", "--broker", slave.address, "--group", "g", "--topic", "T", "--count", "100",
        "--timeout-ms", "20000", "--heartbeat-ms", "200",
    )  # fmt: skip
    assert out["unique"] == 100 and out["served_by"] == {"1": 100}  # all of it read on the slave
    with Admin(rs.master.address) as admin:  # and the commits landed on the master
        assert [admin.query_offset("g", "T", q) for q in range(2)] == [50, 50]


@contextmanager
def cli_child(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`tailrace ARGS` as a child process, killed (and its pipes closed)
    however the test ends."""
    p = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


def test_produce_to_a_broker_killed_midway_gives_up_in_time(procs: ProcessGroup) -> None:
    """200,000 messages, the broker SIGKILLed two seconds in: the producer says
    why as soon as it fails and exits non-zero within retry_timeout_s + 5 s."""
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("T", 4)
    args = ["--broker", b.address, "--topic", "T", "--count", "200000", "--batch", "64", "--json"]
    with cli_child("produce", *args) as p:
        poll_until(lambda: max_offset(b) > 0, 10, "the first messages stored")
        b.kill()
        killed = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - killed
    assert p.returncode != 0
    assert took < 20 + 5, f"gave up {took:.1f} s after the kill"  # retry_timeout_s + 5 s
    assert "BROKER_UNAVAILABLE" in err, err  # the first error, said when it happened
    assert json.loads(out.strip().splitlines()[-1])["failed"] > 0


def test_produce_through_a_nameserver_gives_up_when_the_master_dies_without_failover(
    procs: ProcessGroup,
) -> None:
    """The local-1m-2s shape (no controller): the master SIGKILLed mid-run
    leaves no writable queue; the producer exits non-zero within
    retry_timeout_s + 5 s instead of stalling for good."""
    c = procs.cluster(("m",), slaves=2, extra=["--set", "replication.secret=s"], topic="T", queues=4)
    master = c.groups["m"].master
    with cli_child(
        "produce", "--namesrv", c.namesrv[0], "--topic", "T", "--count", "200000", "--batch", "64"
    ) as p:
        poll_until(lambda: max_offset(master) > 100_000, 20, "the first messages stored")
        master.kill()
        killed = time.monotonic()
        _out, err = p.communicate(timeout=60)
        took = time.monotonic() - killed
    assert p.returncode != 0
    assert took < 20 + 5, f"gave up {took:.1f} s after the kill"
    assert "tailrace produce:" in err, err


def test_consume_whose_brokers_are_gone_says_so_within_its_timeout(procs: ProcessGroup) -> None:
    c = procs.cluster(("m",), slaves=0, topic="T", queues=2)
    master = c.groups["m"].master
    with Producer(master.address) as prod:
        prod.send_batch("T", [b"x"] * 20, queue_id=0)
    args = [
        "--namesrv",
        c.namesrv[0],
        "--group",
        "g",
        "--topic",
        "T",
        "--count",
        "1000",
        "--timeout-ms",
        "6000",
    ]
    with cli_child("consume", *args, "--heartbeat-ms", "200") as p:
        poll_until(
            lambda: broker_status(master)["details"]["waiting_pulls"] > 0, 20, "the consumer's held pulls"
        )
        master.kill()
        killed = time.monotonic()
        _out, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert time.monotonic() - killed < 6 + 3
    assert f"could not reach {master.address}" in err, err
