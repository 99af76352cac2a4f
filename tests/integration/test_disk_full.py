"""A full disk on a real small filesystem (a tmpfs this test mounts): sends
are refused with DISK_FULL above the watermark and resume when space
returns; nothing stored is deleted to make room; ENOSPC itself leaves the
store as it was and tells the client."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from deploy.harness import ProcessGroup
from deploy.waits import poll_until

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted afterwards whatever happens."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _send(stub: object, n: int = 64) -> tuple[str, int]:
    """(outcome, stored): "ok", or the error code the broker answered."""
    req = pb.SendBatchRequest(topic="t", queue_id=0, messages=[pb.Message(body=b"x" * 16 * 1024)] * n)
    try:
        resp = stub.SendBatch(req, timeout=10)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        md = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
        return str(md.get("tailrace-error-code", exc.code())), 0
    return ("ok", n) if resp.status == pb.SEND_OK else (pb.SendStatus.Name(resp.status), 0)


def test_sends_are_refused_over_the_watermark_and_resume_when_space_returns(
    procs: ProcessGroup, small_disk: Path
) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(bytes(24 * MiB))  # someone else's data, removed later
    b = procs.broker("b", extra=[
        "--data-dir", str(small_disk / "data"),
        "--set", "store.disk_max_used_ratio=0.6", "--set", "store.retention_interval_ms=200",
        "--set", "store.max_message_bytes=1048576", "--set", "store.max_batch_bytes=2097152",
    ], segment_bytes=4 * MiB)  # fmt: skip
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(b.address))  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(topic="t", queues=1), timeout=10)
    acked, outcome = 0, "ok"
    for _ in range(200):  # ~200 MiB would be sent: the disk is 64
        outcome, n = _send(stub)
        acked += n
        if outcome != "ok":
            break
    assert outcome == "DISK_FULL", outcome
    assert acked > 0
    offsets = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic="t"), timeout=10).queues[0]
    assert (offsets.min_offset, offsets.max_offset) == (0, acked)  # nothing deleted to make room
    os.remove(filler)  # space returns
    poll_until(lambda: _send(stub, 1)[0] == "ok", 10, "sends to resume")
    got = stub.Pull(pb.PullRequest(group="g", topic="t", queue_id=0, queue_offset=0, max_messages=1,
                                   max_bytes=MiB), timeout=10)  # fmt: skip
    assert got.records  # the first message is still there


def test_enospc_itself_stores_nothing_and_says_so(procs: ProcessGroup, small_disk: Path) -> None:
    """Without a watermark (1.0) the disk runs out for real: the send that
    meets ENOSPC is refused as STORAGE_FULL and undone, every acknowledged
    message is there after a restart, and sends resume once space returns."""
    filler = small_disk / "filler"
    filler.write_bytes(bytes(24 * MiB))
    b = procs.broker("b", extra=[
        "--data-dir", str(small_disk / "data"), "--set", "store.disk_max_used_ratio=1.0",
        "--set", "store.max_message_bytes=1048576", "--set", "store.max_batch_bytes=2097152",
    ], segment_bytes=4 * MiB)  # fmt: skip
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(b.address))  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(topic="t", queues=1), timeout=10)
    acked, outcome = 0, "ok"
    for _ in range(200):
        outcome, n = _send(stub)
        acked += n
        if outcome != "ok":
            break
    assert outcome == "STORAGE_FULL", outcome
    offsets = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic="t"), timeout=10).queues[0]
    assert (offsets.min_offset, offsets.max_offset) == (0, acked)  # the refused batch left nothing
    b.restart()
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(b.address))  # type: ignore[no-untyped-call]
    offsets = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic="t"), timeout=10).queues[0]
    assert offsets.max_offset == acked  # every acknowledged message survived
    os.remove(filler)
    poll_until(lambda: _send(stub, 1)[0] == "ok", 10, "sends to resume")
