"""The operator's commands against a real cluster (a master and a slave,
TLS and accounts on), run as users run them: `tailrace group | message |
topic describe`, and `cluster status --watch`. A reset is proved by where a
consumer of the group then starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumer import Producer, PullConsumer
from consumer.producer import OutgoingMessage
from core.route import MessageQueue
from deploy.harness import ProcessGroup, poll_until
from deploy.pki import PROXY
from tests.helpers.cli import cli, cli_json, read_jsonl

pytestmark = pytest.mark.integration


def consume(target: list[str], group: str, count: int, log: Path) -> dict[str, Any]:
    """`tailrace consume` of `count` messages of T as `group` (it commits as it leaves)."""
    out = cli_json("consume", *target, "--group", group, "--topic", "T", "--count", str(count),
                   "--timeout-ms", "30000", "--log", str(log))  # fmt: skip
    assert out["unique"] == count, out
    return out


def lag_by_queue(target: list[str], group: str) -> dict[int, int]:
    out = cli_json("group", "describe", group, *target)
    return {q["queue_id"]: q["lag"] for q in out["queues"] if q["topic"] == "T"}


def test_group_describe_reset_and_message_lookup_on_a_real_cluster(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    pki = procs.secure()
    cluster = procs.cluster(("g",), slaves=1, topic="T", queues=2)
    target = ["--profile", str(pki.profile_file)]
    with Producer(namesrv=cluster.namesrv, profile=pki.profile_file) as producer:
        receipts = producer.send_batch("T", [f"m{i}".encode() for i in range(20)], queue=MessageQueue("g", 0))
        receipts += producer.send_batch(
            "T", [f"n{i}".encode() for i in range(20)], queue=MessageQueue("g", 1)
        )
        (keyed,) = producer.send_batch(
            "T", [OutgoingMessage(b"the keyed one", keys="order-42 shop-7")], queue=MessageQueue("g", 1)
        )
    consume(target, "G", 41, tmp_path / "c1.jsonl")

    # describe: one entry per queue, lag 0 after consuming; list shows the group
    out = cli_json("group", "describe", "G", *target)
    assert sorted((q["queue_id"], q["lag"], q["max_offset"]) for q in out["queues"]) == [
        (0, 0, 20),
        (1, 0, 21),
    ]
    assert all(q["read_from"] in ("master", "slave") and q["broker_name"] == "g" for q in out["queues"])
    assert any(g["group"] == "G" and g["lag"] == 0 for g in cli_json("group", "list", *target)["groups"])
    text = cli("group", "describe", "G", *target)
    assert text.returncode == 0 and "READ_FROM" in text.stdout and "master" in text.stdout, text.stderr

    # a dry run changes nothing; the reset then moves both queues back to their start
    plan = cli_json("group", "reset-offset", "G", "--topic", "T", "--to-earliest", "--dry-run", *target)
    assert not plan["applied"] and [(p["old_offset"], p["new_offset"]) for p in plan["plan"]] == [
        (20, 0),
        (21, 0),
    ]
    assert lag_by_queue(target, "G") == {0: 0, 1: 0}
    assert cli_json("group", "reset-offset", "G", "--topic", "T", "--to-earliest", *target)["applied"]
    assert lag_by_queue(target, "G") == {0: 20, 1: 21}
    consume(target, "G", 41, tmp_path / "c2.jsonl")  # everything again: it landed at the start

    # to an offset: the next consumer starts there on each queue
    cli_json("group", "reset-offset", "G", "--topic", "T", "--to-offset", "15", *target)
    consume(target, "G", 11, tmp_path / "c3.jsonl")
    got = [r for r in read_jsonl(tmp_path / "c3.jsonl") if "offset" in r]
    assert sorted((r["queue"], r["offset"]) for r in got) == [(0, o) for o in range(15, 20)] + [
        (1, o) for o in range(15, 21)
    ]

    # refused while a member is live (nothing changes), done with --force
    with PullConsumer(namesrv=cluster.namesrv, group="G", topic="T", profile=pki.profile_file) as member:
        member.poll(100)
        poll_until(lambda: any(q["members"] for q in cli_json("group", "describe", "G", *target)["queues"]),
                   20, "the member seen")  # fmt: skip
        r = cli("group", "reset-offset", "G", "--topic", "T", "--to-earliest", *target)
        assert r.returncode != 0 and "live member" in r.stderr and "nothing was reset" in r.stderr, r.stderr
        assert lag_by_queue(target, "G") == {0: 0, 1: 0}
        # forced: it writes (the group is at its end, so the offsets must move back to show it)
        forced = cli_json(
            "group", "reset-offset", "G", "--topic", "T", "--to-offset", "5", "--force", *target
        )
        assert forced["applied"] and forced["members"]
        assert [(p["old_offset"], p["new_offset"]) for p in forced["plan"]] == [(20, 5), (21, 5)]
        assert lag_by_queue(target, "G") == {0: 15, 1: 16}
        # a live member would commit its own position over the reset when it leaves (docs/design.md,
        # "Live members"): this one stops without committing, as a killed one would
        member.close(commit=False)
    consume(target, "G", 31, tmp_path / "c4.jsonl")  # the forced reset is where consumption lands
    got = [r for r in read_jsonl(tmp_path / "c4.jsonl") if "offset" in r]
    assert sorted((r["queue"], r["offset"]) for r in got) == [(0, o) for o in range(5, 20)] + [
        (1, o) for o in range(5, 21)
    ]

    # message get by the id the send returned; find by a key
    got_msg = cli_json("message", "get", "--id", keyed.message_id, *target)
    assert (got_msg["id"], got_msg["body"], got_msg["keys"]) == (
        keyed.message_id,
        "the keyed one",
        "order-42 shop-7",
    )
    assert cli_json("message", "get", "--id", receipts[3].message_id, *target)["body"] == "m3"
    found = cli_json("message", "find", "--topic", "T", "--key", "shop-7", *target)
    assert [m["id"] for m in found["messages"]] == [keyed.message_id] and found["complete"]
    inside = keyed.message_id[:-1] + ("F" if keyed.message_id[-1] != "F" else "E")  # not a record's start
    missing = cli("message", "get", "--id", inside, *target)
    assert missing.returncode != 0 and "MESSAGE_NOT_FOUND" in missing.stderr

    # topic describe: queues and offsets per broker group, and its consumer group
    topic = cli_json("topic", "describe", "T", *target)
    (g,) = topic["groups"]
    assert [(q["queue_id"], q["max_offset"]) for q in g["queues"]] == [(0, 20), (1, 21)]
    assert sorted(b["role"] for b in g["brokers"]) == ["master", "slave"]
    assert [c["group"] for c in topic["consumer_groups"]] == ["G"]

    # an account without admin is refused every admin command
    other = tmp_path / "other.toml"
    text_profile = pki.profile_file.read_text().replace('access_key = "admin"', f'access_key = "{PROXY}"')
    other.write_text(text_profile.replace(pki.admin_secret, pki.proxy_secret))
    other.chmod(0o600)
    for args in (("group", "list"), ("message", "find", "--topic", "T", "--key", "k")):
        r = cli(*args, "--profile", str(other), "--json")
        assert r.returncode != 0 and "PERMISSION_DENIED" in r.stderr and "admin" in r.stderr, r.stderr


def test_cluster_status_watch_refreshes_and_commands_take_the_clusters_dir(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    pki = procs.secure()
    cluster = procs.cluster(("g",), topic="T", queues=1)
    ns, broker = procs.processes["ns0"], procs.processes["g"]
    rows = [
        {"name": "ns0", "role": "nameserver", "group": "", "broker_id": -1, "address": ns.address},
        {"name": "g", "role": "master", "group": "g", "broker_id": 0, "address": broker.address},
    ]
    rows[0]["pid"], rows[1]["pid"] = ns.pid, broker.pid
    run_dir = tmp_path / "cluster"
    run_dir.mkdir()
    (run_dir / "cluster.json").write_text(json.dumps({"profile": str(pki.profile_file), "processes": rows}))
    r = cli(
        "cluster", "status", "--dir", str(run_dir), "--watch", "--interval-s", "0.2", "--count", "2", "--json"
    )
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and len(lines) == 2 and lines[1]["t"] > lines[0]["t"], r.stderr
    assert all(p["healthy"] for p in lines[-1]["processes"])
    r = cli("cluster", "status", "--dir", str(run_dir), "--watch", "--interval-s", "0.2", "--count", "2")
    assert r.returncode == 0 and r.stdout.count("Ctrl-C stops") == 2 and r.stdout.count("healthy") == 4
    assert cli_json("topic", "describe", "T", "--dir", str(run_dir))["groups"][0]["broker_name"] == "g"
    assert cluster.namesrv
