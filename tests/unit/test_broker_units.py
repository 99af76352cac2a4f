"""Broker-side logic without a socket: config, subscriptions, long-poll waits,
error mapping, offsets, and the generated code being current."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import grpc
import pytest

from consumer.send_logic import send_status
from core.broker_config import documented_keys, load_broker_config
from core.errors import (
    ConfigError,
    InvalidArgumentError,
    LeaseExpiredError,
    MessageTooLargeError,
    NotControllerError,
    NotMasterError,
    TailraceError,
    UnknownTopicError,
)
from core.grpc_server import ErrorInterceptor
from core.grpc_status import (
    CONTROLLER_LEADER_KEY,
    ERROR_CODE_KEY,
    MASTER_ADDRESS_KEY,
    TO_GRPC,
    error_from_rpc,
    grpc_status_for,
)
from core.longpoll import ArrivalNotifier
from core.offsets import FORGET, ConsumerOffsets
from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.record import tag_hash
from core.roles import SendStatus
from core.sidefiles import LogHistory
from core.subscription import Subscription
from deploy.harness import poll_until

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_config_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text('[broker]\nbroker_name = "g1"\nlisten = "127.0.0.1:0"\n[store]\nflush = "sync"\n')
    cfg = load_broker_config(f, {"store.flush": "async", "pull.max_wait_ms": "100",
                                 "broker.auto_create_topics": "false"})  # fmt: skip
    assert cfg.broker.broker_name == "g1" and cfg.store.flush == "async"
    assert cfg.pull.max_wait_ms == 100 and cfg.broker.auto_create_topics is False


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"broker.listen": "nowhere"}, "broker.listen"),
        ({"broker.broker_id": "1"}, "broker.broker_id"),  # id 1 with role master
        ({"store.flush": "maybe"}, "store.flush"),
        ({"nosection.key": "1"}, "nosection.key"),
        ({"server.max_workers": "1"}, "server.max_workers"),
        ({"broker.broker_name": "has space"}, "broker.broker_name"),
        ({"broker.pop_commit_interval_ms": "-1"}, "broker.pop_commit_interval_ms"),
        ({"broker.pop_commit_interval_ms": str(24 * 3600 * 1000 + 1)}, "broker.pop_commit_interval_ms"),
        ({"broker.pop_live_ms": "999"}, "broker.pop_live_ms"),
        ({"broker.broker_id": "1", "broker.controller": "h:1,nowhere"}, "broker.controller"),
        ({"broker.broker_id": "1", "broker.controller": "h:1,,h:2"}, "broker.controller"),
        ({"broker.broker_id": "1", "broker.controller": "h:1, h:2,h:1"}, "broker.controller"),  # twice
        (
            {"broker.broker_id": "1", "broker.controller": ",".join(f"h:{i}" for i in range(17))},
            "broker.controller",
        ),
    ],
)
def test_bad_config_names_the_key(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_broker_config(None, overrides)
    assert exc.value.key == key


def test_controllers_are_a_list() -> None:
    one = load_broker_config(None, {"broker.broker_id": "1", "broker.controller": "h:1"})
    assert one.broker.controllers == ["h:1"]
    many = ",".join(f"h:{i}" for i in range(16))
    cfg = load_broker_config(None, {"broker.broker_id": "1", "broker.controller": f" {many} "})
    assert cfg.broker.controllers == [f"h:{i}" for i in range(16)]  # in order: the first is tried first
    assert load_broker_config(None, {}).broker.controllers == []


def test_every_broker_key_is_documented() -> None:
    keys = documented_keys()
    assert len(keys) > 20
    assert all(doc for _, _, doc in keys)


def test_subscriptions() -> None:
    assert Subscription.parse("*").tags is None and Subscription.parse("").hash_filter() is None
    s = Subscription.parse(" A ||B|| C ")
    assert s.tags == {"A", "B", "C"} and s.expression == "A || B || C"
    f = s.hash_filter()
    assert f is not None and f(tag_hash("B")) and not f(tag_hash("D"))
    assert s.matches("A") and not s.matches("D")
    for bad in ("A||", "|| A", "A | B", "A || *"):
        with pytest.raises(InvalidArgumentError):
            Subscription.parse(bad)


def test_long_poll_wakes_on_notify_and_on_close() -> None:
    n = ArrivalNotifier()
    flag = {"v": False}
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(n.wait("k", lambda: flag["v"], 30)))
    t.start()
    poll_until(lambda: n.waiting("k") == 1, 5, "the waiter")
    n.notify(["other"])  # another queue: keeps waiting
    flag["v"] = True
    n.notify(["k"])
    t.join(5)
    assert woke == [True] and n.waiting() == 0
    t2 = threading.Thread(target=lambda: woke.append(n.wait("k", lambda: False, 30)))
    t2.start()
    poll_until(lambda: n.waiting("k") == 1, 5, "the second waiter")
    n.close()
    t2.join(5)
    assert woke == [True, False] and not t2.is_alive()
    assert n.wait("k", lambda: False, 30) is False  # closed: returns at once


def test_long_poll_times_out() -> None:
    n = ArrivalNotifier()
    t0 = time.monotonic()
    assert n.wait("k", lambda: False, 0.05) is False
    assert time.monotonic() - t0 >= 0.05


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, md: tuple = ()) -> None:  # type: ignore[type-arg]
        self._code, self._details, self._md = code, details, md

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:  # type: ignore[type-arg]
        return self._md


def test_error_table_round_trips() -> None:
    err = MessageTooLargeError("too big")
    status = grpc_status_for(err)
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED  # a size limit is a quota
    back = error_from_rpc(_FakeRpcError(status, str(err), ((ERROR_CODE_KEY, err.code),)))
    assert type(back) is MessageTooLargeError and back.message == "too big"
    plain = error_from_rpc(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connect failed"))
    assert plain.code == "BROKER_UNAVAILABLE" and plain.retriable and plain.refresh_route
    assert error_from_rpc(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "x")).code == UnknownTopicError.code
    assert all(isinstance(v, grpc.StatusCode) for v in TO_GRPC.values())


class _Aborted(Exception):
    pass


class _FakeContext:
    """What the error interceptor writes into a call's status."""

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.status: grpc.StatusCode | None = None
        self.details = ""

    def set_trailing_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self.trailing = md

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status, self.details = code, details
        raise _Aborted


def _through_the_wire(err: TailraceError) -> tuple[TailraceError, dict[str, str]]:
    """Raise `err` in a handler behind the error interceptor, and decode the
    status it made the way a client does."""

    def handler(request: object, context: object) -> None:
        raise err

    wrapped = ErrorInterceptor()._wrap(grpc.unary_unary_rpc_method_handler(handler), "/t/M")
    ctx = _FakeContext()
    assert wrapped.unary_unary is not None
    with pytest.raises(_Aborted):
        wrapped.unary_unary(object(), cast(grpc.ServicerContext, ctx))
    assert ctx.status is not None
    return error_from_rpc(_FakeRpcError(ctx.status, ctx.details, ctx.trailing)), dict(ctx.trailing)


def test_not_controller_names_the_leader_both_ways() -> None:
    back, md = _through_the_wire(NotControllerError("a standby", "10.0.0.2:9877"))
    assert md[CONTROLLER_LEADER_KEY] == "10.0.0.2:9877" and md[ERROR_CODE_KEY] == "NOT_CONTROLLER"
    assert isinstance(back, NotControllerError) and back.leader_address == "10.0.0.2:9877"
    assert back.message == "a standby" and back.retriable  # an expected answer from a standby
    # a nameserver with no controller, or a standby that does not know the leader: no key
    back, md = _through_the_wire(NotControllerError("no controller here"))
    assert CONTROLLER_LEADER_KEY not in md and isinstance(back, NotControllerError)
    assert back.leader_address == ""
    # the master's address still travels with NOT_MASTER, and not as a leader hint
    back, md = _through_the_wire(NotMasterError("follower", "h:1"))
    assert isinstance(back, NotMasterError) and back.master_address == "h:1"
    assert MASTER_ADDRESS_KEY in md and CONTROLLER_LEADER_KEY not in md


def test_lease_expired_is_its_own_code() -> None:
    back, md = _through_the_wire(LeaseExpiredError("lease lapsed"))
    assert type(back) is LeaseExpiredError and md[ERROR_CODE_KEY] == "MASTER_LEASE_EXPIRED"
    assert back.retriable and str(back).startswith("MASTER_LEASE_EXPIRED: ")
    assert not isinstance(back, NotMasterError)  # a distinct refusal, not a demotion


def test_send_statuses_are_the_wire_enum() -> None:
    """Every SendStatus has its protobuf name, and back (a status missing
    on either side is a send the other cannot say or read)."""
    wire = set(bpb.SendStatus.keys()) - {"SEND_STATUS_UNSPECIFIED"}
    assert {s.value for s in SendStatus} == wire
    assert send_status(bpb.MASTER_LEASE_EXPIRED) is SendStatus.MASTER_LEASE_EXPIRED
    assert not SendStatus.MASTER_LEASE_EXPIRED.stored


def test_consumer_offsets_persist(tmp_path: Path) -> None:
    o = ConsumerOffsets(tmp_path)
    o.commit("g", "t", 1, 42)
    o.commit("g", "t", 2, 7)
    assert ConsumerOffsets(tmp_path).query("g", "t", 1) == 42
    assert ConsumerOffsets(tmp_path).query("g", "t", 3) is None
    with pytest.raises(InvalidArgumentError):
        o.commit("bad group", "t", 1, 1)
    with pytest.raises(InvalidArgumentError):
        o.commit("g", "t", 1, -1)


def test_a_forget_record_drops_a_committed_offset_in_log_order(tmp_path: Path) -> None:
    """A topic deletion forgets its groups' offsets with `offset` records of
    offset -1: applied, replayed (a rebuilt offsets.json) and rolled back (a
    cut tail, by `prev`) in log order like any commit."""
    o = ConsumerOffsets(tmp_path)
    records = [
        {"group": "g", "topic": "t", "queue": 0, "offset": 5, "prev": -1},
        {"group": "g", "topic": "t", "queue": 0, "offset": FORGET, "prev": 5},  # the deletion
        {"group": "g", "topic": "t", "queue": 1, "offset": FORGET, "prev": -1},  # nothing to forget
    ]
    for p in records:
        o.apply(p)
    assert o.query("g", "t", 0) is None and ConsumerOffsets(tmp_path).query("g", "t", 0) is None
    assert o.roll_back(records[1:], lambda: records[:1]) == 2  # the deletion cut away: back to 5
    assert o.query("g", "t", 0) == 5 and o.query("g", "t", 1) is None
    recreated = {"group": "g", "topic": "t", "queue": 0, "offset": 1, "prev": -1}
    (tmp_path / "offsets.json").unlink()  # rebuilt from the log: the last word wins
    history = LogHistory(0, 100, lambda kind: [*records, recreated])
    assert ConsumerOffsets(tmp_path, history).query("g", "t", 0) == 1
    history = LogHistory(0, 100, lambda kind: records)
    (tmp_path / "offsets.json").unlink()
    assert ConsumerOffsets(tmp_path, history).query("g", "t", 0) is None


def test_generated_code_is_current() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deploy.protogen", "--check"], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_progress_is_silent_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.client_cli import Progress

    p = Progress("produced", 100)
    assert not p.enabled  # pytest captures stderr: not a terminal
    p.update(50)
    p.done()
    assert capsys.readouterr().err == ""
    p.enabled = True  # as on a terminal
    p._last = -1.0
    p.update(50)
    assert "produced: 50/100" in capsys.readouterr().err
