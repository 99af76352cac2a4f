"""`tailrace topic delete` on a real cluster (a master and its slave, TLS and
accounts on, small segments), run as users run it: a dry run changes
nothing; the deletion takes the topic out of `topic describe`, `topic list`
and the routes, the slave agrees, a restart keeps it deleted, and the topic
created again starts at offset 0 with the old group's offsets forgotten.
Refusals (a broker's own topic, an unknown one, an account without admin)
store nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumer import Admin, Producer
from deploy.harness import ProcessGroup, TailraceProcess, poll_until
from deploy.pki import PROXY
from tests.helpers.cli import cli, cli_json, read_jsonl

pytestmark = pytest.mark.integration
SMALL = ["--set", "store.max_message_bytes=262144", "--set", "store.warm_segments=false"]


def consume(target: list[str], group: str, count: int, log: Path) -> list[tuple[int, int]]:
    """(queue, offset) of the `count` messages of T `tailrace consume` got as `group`."""
    out = cli_json("consume", *target, "--group", group, "--topic", "T", "--count", str(count),
                   "--timeout-ms", "30000", "--log", str(log))  # fmt: skip
    assert out["unique"] == count, out
    return sorted((r["queue"], r["offset"]) for r in read_jsonl(log) if "offset" in r)


def end_of_log(broker: TailraceProcess, profile: Path) -> int:
    with Admin(broker.address, profile=profile) as admin:
        return int(admin.status()["max_offset"])


def unrouted(admin: Admin) -> bool:
    assert admin.routes is not None
    answers = admin.routes.routes_by_nameserver("T")
    return bool(answers) and all(r is None for r in answers.values())


def topics_on(broker: TailraceProcess, profile: Path) -> dict[str, int]:
    with Admin(broker.address, profile=profile) as admin:
        return admin.list_topics()


def test_a_topic_is_deleted_everywhere_and_stays_deleted(procs: ProcessGroup, tmp_path: Path) -> None:
    pki = procs.secure()
    profile = pki.profile_file
    cluster = procs.cluster(("g",), slaves=1, topic="T", queues=2, segment_bytes=1 << 20, extra=SMALL)
    master, (slave,) = cluster.groups["g"].master, cluster.groups["g"].slaves
    target = ["--profile", str(profile)]
    with Producer(namesrv=cluster.namesrv, profile=profile) as producer:
        producer.send_batch("T", [f"old{i}".encode() for i in range(10)])
    assert len(consume(target, "G", 10, tmp_path / "c1.jsonl")) == 10

    # a dry run says what would go and changes nothing
    end = end_of_log(master, profile)
    plan = cli_json("topic", "delete", "T", "--dry-run", *target)
    (g,) = plan["groups"]
    assert plan["ok"] and plan["dry_run"] and plan["routes_dropped"] is None, plan
    assert (g["outcome"], g["messages"], g["consumer_groups"]) == ("would_delete", 10, ["G"]), g
    assert sum(o["offset"] for o in g["offsets"]) == 10
    assert end_of_log(master, profile) == end
    assert cli_json("topic", "describe", "T", *target)["groups"][0]["messages"] == 10

    # deleted: gone from describe, list and every route; the slave agrees
    out = cli_json("topic", "delete", "T", *target)
    assert out["ok"] and out["routes_dropped"] and out["groups"][0]["outcome"] == "deleted", out
    gone = cli("topic", "describe", "T", *target)
    assert gone.returncode != 0 and "UNKNOWN_TOPIC" in gone.stderr, gone.stderr
    assert "T" not in {t["name"] for t in cli_json("topic", "list", *target)["topics"]}
    with Admin(namesrv=cluster.namesrv, profile=profile) as admin:
        assert unrouted(admin)
    poll_until(lambda: "T" not in topics_on(slave, profile), 20, "the slave dropping T")
    again = cli("topic", "delete", "T", *target)  # nothing left to delete
    assert again.returncode != 0 and "UNKNOWN_TOPIC" in again.stderr, again.stderr

    # a restart of the master (and of the slave) brings nothing back
    master.restart()
    slave.restart()
    for b in (master, slave):
        assert "T" not in topics_on(b, profile)
    with Admin(namesrv=cluster.namesrv, profile=profile) as admin:
        poll_until(lambda: sorted(admin.masters()) == ["g"], 30, "the master registered again")
        assert unrouted(admin)

    # created again: offsets start at 0, and G (its old offsets forgotten) reads it from the start
    assert cli_json("topic", "create", "--topic", "T", "--queues", "2", *target)["created"]
    with Producer(namesrv=cluster.namesrv, profile=profile) as producer:
        producer.send_batch("T", [f"new{i}".encode() for i in range(6)])
    got = consume(target, "G", 6, tmp_path / "c2.jsonl")
    per_queue: dict[int, list[int]] = {}
    for q, o in got:
        per_queue.setdefault(q, []).append(o)
    assert all(offsets == list(range(len(offsets))) for offsets in per_queue.values()), got
    poll_until(lambda: topics_on(slave, profile).get("T") == 2, 20, "the slave has the new T")

    # refusals store nothing
    end = end_of_log(master, profile)
    refusals: list[tuple[Any, ...]] = [
        (("topic", "delete", "%SCHEDULE%", *target), "INVALID_TOPIC"),
        (("topic", "delete", "%RETRY%G", *target), "--force"),
        (("topic", "delete", "nope", *target), "UNKNOWN_TOPIC"),
    ]
    other = tmp_path / "other.toml"  # an account without admin
    text_profile = profile.read_text().replace('access_key = "admin"', f'access_key = "{PROXY}"')
    other.write_text(text_profile.replace(pki.admin_secret, pki.proxy_secret))
    other.chmod(0o600)
    refusals.append((("topic", "delete", "T", "--profile", str(other)), "PERMISSION_DENIED"))
    for args, why in refusals:
        r = cli(*args)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
    assert end_of_log(master, profile) == end
    assert topics_on(master, profile).get("T") == 2
