"""Real processes on damaged side files (issue 16): a broker rebuilds
topics.json, offsets.json and epochs.json from its log when the log holds
them all, and otherwise exits with status 2 naming the file and what to do;
a controller's damaged controller.json is refused the same way. Never a
traceback."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from consumer import Admin, Producer
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from deploy.harness import ProcessFailed, ProcessGroup, TailraceProcess

pytestmark = pytest.mark.integration
SIDE_FILES = ("topics.json", "offsets.json", "epochs.json")
SMALL = ["--set", "store.max_message_bytes=16384", "--set", "store.warm_segments=false"]


def commit(b: TailraceProcess, group: str, topic: str, queue_id: int, offset: int) -> None:
    with grpc.insecure_channel(b.address) as ch:
        request = pb.CommitOffsetRequest(group=group, topic=topic, queue_id=queue_id, offset=offset)
        broker_pb2_grpc.BrokerStub(ch).CommitOffset(request, timeout=10)


def truncate(path: Path) -> bytes:
    bad = path.read_bytes()[: max(1, path.stat().st_size // 2)]
    path.write_bytes(bad)
    return bad


def test_a_broker_rebuilds_its_damaged_side_files_from_its_log(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("T", 4)
    with Producer(b.address) as prod:
        prod.send_batch("T", [f"m-{i}".encode() for i in range(20)], queue_id=1)
    commit(b, "G", "T", 1, 3)
    commit(b, "G", "T", 1, 12)
    assert b.stop() == 0
    data = b.workdir / "data"
    bad = {name: truncate(data / name) for name in SIDE_FILES}
    b.restart()
    with Admin(b.address) as admin:
        assert admin.list_topics().get("T") == 4
        assert admin.query_offset("G", "T", 1) == 12
        assert admin.queue_offsets("T")[1] == (0, 20)
    for name in SIDE_FILES:
        [kept] = sorted(data.glob(f"{name}.damaged-*"))
        assert kept.read_bytes() == bad[name]
    assert "Traceback" not in b.log_tail(400)
    assert b.stop() == 0


def test_a_broker_exits_2_on_a_damaged_file_its_log_cannot_replace(procs: ProcessGroup) -> None:
    b = procs.broker("b", segment_bytes=65536, extra=SMALL)
    with Admin(b.address) as admin:
        admin.create_topic("T", 2)
    with Producer(b.address) as prod:
        for _ in range(4):
            prod.send_batch("T", [b"x" * 1000] * 50, queue_id=0)
    commit(b, "G", "T", 0, 150)  # its record lands in the last segment
    assert b.stop() == 0
    data = b.workdir / "data"
    (data / "commitlog" / f"{0:020d}").unlink()  # as retention would: the log starts at 65536
    bad = truncate(data / "offsets.json")
    with pytest.raises(ProcessFailed) as info:
        b.restart()
    text = str(info.value)
    assert "exited with 2" in text, text
    assert str(data / "offsets.json") in text and "starts at offset 65536" in text
    assert "restore it" in text and "move it aside" in text
    assert "Traceback" not in text
    assert (data / "offsets.json").read_bytes() == bad  # nothing was changed
    # what it says to do: moved aside, the file is rebuilt from what the log still holds
    (data / "offsets.json").rename(data / "offsets.json.aside")
    b.start()
    with Admin(b.address) as admin:
        assert admin.query_offset("G", "T", 0) == 150


def test_a_controller_exits_2_on_a_damaged_controller_json(procs: ProcessGroup, tmp_path: Path) -> None:
    ctl = tmp_path / "controller"
    ctl.mkdir(mode=0o700)
    (ctl / "controller.json").write_text('{"groups": {"g": {"epoch": 3, "master_id"')  # cut short
    extra = ["--set", "controller.enabled=true", "--set", f'controller.data_dir="{ctl}"']
    with pytest.raises(ProcessFailed) as info:
        procs.nameserver("ns", extra=extra)
    text = str(info.value)
    assert "exited with 2" in text and str(ctl / "controller.json") in text and "restore it" in text, text
    assert "Traceback" not in text
