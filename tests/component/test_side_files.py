"""Side files (topics.json, offsets.json, epochs.json): written whole or not
at all, and a write that fails is reported, never acknowledged (issue 16)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from core.epochs import EpochFile
from core.grpc_status import ERROR_CODE_KEY
from core.offsets import ConsumerOffsets
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import Message
from core.roles import Role
from core.sidefiles import DamagedFileError
from core.store import MessageStore
from nameserver.controller import Controller, Heartbeat
from tests.helpers.cli import ROOT
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
Open = Callable[..., MessageStore]


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
    batch = pb.SendBatchRequest(topic="T", queue_id=0, messages=[pb.Message(body=b"x")] * 10)
    stub.SendBatch(batch, timeout=5)  # commits name offsets the queue has
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


# ---- damaged side files: rebuilt from the log where it holds them, else refused -------------

DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "not JSON": lambda good: b"\x00\xff\xfe not json at all",
    "not an object": lambda good: b"[1, 2, 3]",
    "wrong shape": lambda good: b'{"topics": [], "offsets": [], "epochs": {}, "groups": []}',
    "values out of range": lambda good: re.sub(rb"\d+", rb"-\g<0>", good),  # every number negative
}


def damage(path: Path, how: str) -> bytes:
    bad = DAMAGE[how](path.read_bytes())
    path.write_bytes(bad)
    return bad


def damaged_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


def with_history(s: MessageStore, segments: int = 1) -> None:
    """Topics t (4 queues) and u (2), an `offset` commit that is later moved
    on, two epochs, and messages filling `segments` segments."""
    s.create_topic("t", 4)
    s.create_topic("u", 2)
    s.append_system("epoch", {"epoch": 1, "start": s.commitlog.max_offset})
    s.append_system("offset", {"group": "g", "topic": "t", "queue": 3, "offset": 7, "prev": -1})
    s.append_system("offset", {"group": "g", "topic": "t", "queue": 3, "offset": 9, "prev": 7})
    s.append_system("epoch", {"epoch": 4, "start": s.commitlog.max_offset})
    i = 0
    while len(s.commitlog.segments()) < segments or i < 8:
        s.append([Message("u" if i % 2 else "t", i % 2, b"x" * 2000)])
        i += 1


def open_tables(s: MessageStore) -> tuple[ConsumerOffsets, EpochFile]:
    history = s.log_history()
    return ConsumerOffsets(s.data_dir, history), EpochFile(s.data_dir, s.commitlog.max_offset, history)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_topics_json_is_rebuilt_from_a_log_that_holds_it_all(
    open_store: Open, tmp_path: Path, how: str
) -> None:
    data = tmp_path / "d"
    s = open_store(data)
    with_history(s)
    s.close()
    bad = damage(data / "topics.json", how)
    s2 = open_store(data)
    assert {n: s2.topics.queue_count(n) for n in s2.topics.names()} == {"t": 4, "u": 2}
    assert json.loads((data / "topics.json").read_text()) == {
        "topics": {"t": {"queues": 4}, "u": {"queues": 2}}
    }
    [kept] = damaged_copies(data / "topics.json")  # the damaged file is kept, never deleted
    assert kept.read_bytes() == bad


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_offsets_and_epochs_are_rebuilt_from_a_log_that_holds_them_all(
    open_store: Open, tmp_path: Path, how: str
) -> None:
    data = tmp_path / "d"
    s = open_store(data)
    with_history(s)
    offsets, epochs = open_tables(s)
    s.add_system_handler("offset", offsets.apply)
    s.add_system_handler("epoch", epochs.apply)
    history = epochs.history
    s.close()
    bad = {name: damage(data / name, how) for name in ("offsets.json", "epochs.json")}
    s2 = open_store(data)
    offsets2, epochs2 = open_tables(s2)
    assert offsets2.query("g", "t", 3) == 9 and epochs2.history == history == (
        (1, history[0][1]),
        (4, history[1][1]),
    )
    for name in ("offsets.json", "epochs.json"):
        [kept] = damaged_copies(data / name)
        assert kept.read_bytes() == bad[name]
    assert json.loads((data / "offsets.json").read_text()) == {"offsets": {"g": {"t": {"3": 9}}}}


def log_with_its_start_deleted(open_store: Open, data: Path) -> MessageStore:
    """A store whose first segments retention deleted (the log starts past 0);
    every side file written while they were there."""
    s = open_store(data)
    with_history(s, segments=3)
    offsets, epochs = open_tables(s)
    s.add_system_handler("offset", offsets.apply)
    s.add_system_handler("epoch", epochs.apply)
    assert s.enforce_retention(now_ms=1 << 62)  # every sealed segment is "old"
    assert s.commitlog.min_offset > 0
    return s


@pytest.mark.parametrize("name", ["topics.json", "offsets.json", "epochs.json"])
def test_a_damaged_side_file_the_log_cannot_replace_is_refused_naming_it(
    open_store: Open, tmp_path: Path, name: str
) -> None:
    data = tmp_path / "d"
    s = log_with_its_start_deleted(open_store, data)
    start = s.commitlog.min_offset
    s.close()
    bad = damage(data / name, "truncated")
    with pytest.raises(DamagedFileError) as info:
        open_tables(open_store(data))
    message = str(info.value)
    assert str(data / name) in message and f"starts at offset {start}" in message
    assert "restore it" in message and "move it aside" in message
    assert (data / name).read_bytes() == bad and not damaged_copies(data / name)  # nothing changed


def test_a_side_file_moved_aside_is_rebuilt_from_what_the_log_still_holds(
    open_store: Open, tmp_path: Path
) -> None:
    """What the operator is told to do: without the file, a store whose log
    starts past 0 rebuilds topics from the records and the queues holding
    messages, offsets and epochs from the records still there."""
    data = tmp_path / "d"
    s = log_with_its_start_deleted(open_store, data)
    s.close()
    for name in ("topics.json", "offsets.json", "epochs.json"):
        (data / name).rename(data / f"{name}.aside")
    s2 = open_store(data)
    # t had 4 queues, but only queue 0 holds messages now (u: queue 1): the loss the operator accepted
    assert s2.topics.queue_count("t") == 1 and s2.topics.queue_count("u") == 2
    offsets, epochs = open_tables(s2)
    assert offsets.query("g", "t", 3) is None and epochs.history == ()  # their records were deleted


def test_without_a_log_a_damaged_table_is_refused(tmp_path: Path) -> None:
    for name in ("offsets.json", "epochs.json"):
        (tmp_path / name).write_bytes(b'{"offsets": {"g": {"t": {"0": "x"}}}, "epochs": [[2, 5], [1, 9]]}')
    with pytest.raises(DamagedFileError, match="offsets"):
        ConsumerOffsets(tmp_path)
    with pytest.raises(DamagedFileError, match="epochs"):
        EpochFile(tmp_path, 100)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_controller_json_is_refused_naming_it(tmp_path: Path, how: str) -> None:
    ctl = Controller(tmp_path, 4000)
    ctl.heartbeat(Heartbeat("g", "c", 1, "127.0.0.1:1", 0, Role.MASTER, 0), 0)  # bootstraps: written
    assert Controller(tmp_path, 4000).leader_of("g") == (1, 1)
    bad = damage(tmp_path / "controller.json", how)
    with pytest.raises(DamagedFileError) as info:
        Controller(tmp_path, 4000)
    assert str(tmp_path / "controller.json") in str(info.value) and "restore it" in str(info.value)
    assert (tmp_path / "controller.json").read_bytes() == bad


def test_lowering_max_queues_per_topic_does_not_make_topics_json_damaged(
    open_store: Open, tmp_path: Path
) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("t", 16)
    s.close()
    s2 = open_store(tmp_path / "d", max_queues_per_topic=8)
    assert s2.topics.queue_count("t") == 16 and not damaged_copies(tmp_path / "d" / "topics.json")
