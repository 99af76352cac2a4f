"""Side files (topics.json, offsets.json, epochs.json): written whole or not
at all, and a write that fails is reported, never acknowledged (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from core.grpc_status import ERROR_CODE_KEY
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from tests.helpers.cli import ROOT
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def test_a_file_size_limit_leaves_a_valid_topics_json_and_no_temp_file(tmp_path: Path) -> None:
    """The issue's case: under a 300-byte file-size limit (RLIMIT_FSIZE, in a
    child process) a topic table that grows past 300 bytes cannot be written;
    the old topics.json must stay valid and no *.tmp may be left."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from core.errors import StorageFullError
        from core.store.topics import TopicTable
        table = TopicTable(Path({str(tmp_path)!r}), 64)
        table.create("first", 4)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
        try:
            for i in range(20):
                table.create(f"topic-with-a-long-name-{{i}}", 8)
        except (OSError, StorageFullError) as exc:
            print("refused:", exc)
            sys.exit(0)
        sys.exit("every write was accepted")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("refused:") and "topics.json" in out.stdout, out.stdout
    table = json.loads((tmp_path / "topics.json").read_text())  # still valid JSON
    assert len(json.dumps(table, indent=1)) <= 300 and "first" in table["topics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topics.json"]


def blocked(path: Path) -> Path:
    """Make every atomic write of `path` fail, even as root: its temp file's
    name is taken by a directory (unlink and open then fail with EISDIR)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir()
    return tmp


def rpc_error(fn: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_commit_offset_fails_when_offsets_json_cannot_be_written(nodes: Nodes) -> None:
    master = nodes.master()
    core = master.core
    core.leader().create_topic("T", 2)
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(master.address))
    stub.CommitOffset(pb.CommitOffsetRequest(group="G", topic="T", queue_id=0, offset=5), timeout=5)
    end = core.store.commitlog.max_offset
    obstacle = blocked(master.store.data_dir / "offsets.json")
    request = pb.CommitOffsetRequest(group="G", topic="T", queue_id=0, offset=9)
    err = rpc_error(lambda: stub.CommitOffset(request, timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.trailing_metadata() or ())[ERROR_CODE_KEY] == "STORAGE_FULL"  # type: ignore[attr-defined]
    assert "offsets.json" in (err.details() or "")
    # nothing claims the commit: not the table, not the file, not the log
    assert core.offsets.query("G", "T", 0) == 5
    assert json.loads((master.store.data_dir / "offsets.json").read_text())["offsets"]["G"]["T"]["0"] == 5
    assert core.store.commitlog.max_offset == end
    assert [p["offset"] for p in core.store.system_payloads("offset")] == [5]
    obstacle.rmdir()
    stub.CommitOffset(request, timeout=5)  # the same commit succeeds once the file can be written
    assert core.offsets.query("G", "T", 0) == 9
    assert [p["offset"] for p in core.store.system_payloads("offset")] == [5, 9]


def test_create_topic_fails_when_topics_json_cannot_be_written(nodes: Nodes) -> None:
    master = nodes.master()
    store = master.core.store
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(master.address))
    end = store.commitlog.max_offset
    obstacle = blocked(store.data_dir / "topics.json")
    err = rpc_error(lambda: stub.CreateTopic(pb.CreateTopicRequest(topic="N", queues=4), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert store.topics.queue_count("N") is None and store.commitlog.max_offset == end
    obstacle.rmdir()
    assert stub.CreateTopic(pb.CreateTopicRequest(topic="N", queues=4), timeout=5).created
    assert store.topics.queue_count("N") == 4
