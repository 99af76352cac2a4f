"""`tailrace group reset-offset` of a group that pops, on a real cluster,
run as users run it: refused while the group pops (nothing changes), a dry
run shows its pop cursor and messages in flight, forced it moves the cursor,
and the next pops land where asked."""

from __future__ import annotations

import pytest

from consumer import Admin, Producer
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue
from deploy.harness import ProcessGroup
from tests.helpers.cli import cli, cli_json

pytestmark = pytest.mark.integration
SMALL = ["--set", "store.max_message_bytes=262144", "--set", "store.warm_segments=false"]


def test_a_pop_groups_reset_lands_its_next_pops_where_asked(procs: ProcessGroup) -> None:
    cluster = procs.cluster(("g",), topic="T", queues=1, segment_bytes=1 << 20, extra=SMALL)
    target = ["--namesrv", ",".join(cluster.namesrv)]
    with Producer(namesrv=cluster.namesrv) as producer:
        producer.send_batch("T", [f"m{i}".encode() for i in range(10)], queue=MessageQueue("g", 0))
    with Admin(cluster.groups["g"].master.address) as admin:
        conn = admin.conn

        def pop(n: int) -> list[int]:
            req = pb.PopRequest(group="P", topic="T", queue_id=0, max_messages=n, invisible_ms=60_000)
            return [m.queue_offset for m in conn.call(conn.stub.Pop, req).messages]

        def reset(*args: str) -> list[str]:
            return ["group", "reset-offset", "P", "--topic", "T", *args, *target]

        assert pop(3) == [0, 1, 2]
        r = cli(*reset("--to-offset", "6"))
        assert r.returncode != 0 and "popped" in r.stderr and "nothing was reset" in r.stderr, r.stderr
        assert pop(1) == [3]  # the cursor did not move
        dry = cli_json(*reset("--to-offset", "6", "--dry-run"))
        (q,) = dry["plan"]
        assert (q["popped"], q["pop_cursor"], q["pop_inflight"], q["new_offset"]) == (True, 4, 4, 6), q
        assert not dry["applied"] and list(dry["last_pop_ms"]) == ["g"]
        assert cli_json(*reset("--to-offset", "6", "--force"))["applied"]
        assert pop(2) == [6, 7]
        text = cli(*reset("--to-earliest", "--force"))
        assert text.returncode == 0 and "POP_CURSOR" in text.stdout and "popped lately" in text.stdout
        assert pop(10) == list(range(10))
