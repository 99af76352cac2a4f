"""Auto-renew of push consumers' messages (core/rocketmq/renew.py): the
table's decisions with time passed in, the renewer's round against a fake
backend, and the proxy's receive/ack/heartbeat feeding it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import BrokerUnavailableError, InvalidReceiptError, TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.rocketmq.calls import CLIENT_ID
from core.rocketmq.renew import Renewer, RenewTable
from tests.unit.test_rocketmq_consume import PopBackend, _ack, _popped, _receive, _service, _signed, handle

pytestmark = pytest.mark.unit


def _table(**kw: float) -> RenewTable:
    return RenewTable(60_000, **kw)  # type: ignore[arg-type]


def test_a_handle_is_renewed_ahead_of_its_deadline_a_slice_at_a_time() -> None:
    t = _table()
    t.seen("c1", 0.0)
    assert t.track("c1", "a", "G", "T", ["h1"], popped_at=0.0) == 1
    assert t.next_at() == 50.0  # 60 s slice, 10 s ahead
    assert t.due(49.9) == []
    t.seen("c1", 45.0)  # its heartbeat
    (h,) = t.due(50.0)
    assert (h.handle, h.broker, h.group, h.topic) == ("h1", "a", "G", "T")
    t.renewed("h1", sent_at=50.0)
    assert t.next_at() == 100.0


def test_renewal_stops_when_the_client_is_gone() -> None:
    t = _table(alive_s=30.0)
    t.seen("c1", 0.0)
    t.track("c1", "a", "G", "T", ["h1"], 0.0)
    assert t.due(50.0) == [] and len(t) == 0  # no heartbeat since 0 s: gone, let it come back
    t.opened("c2")  # a Telemetry stream open: alive however long ago its heartbeat
    t.track("c2", "a", "G", "T", ["h2"], 0.0)
    assert [h.handle for h in t.due(50.0)] == ["h2"]
    t.renewed("h2", 50.0)
    t.closed("c2", 60.0)  # the stream closed at 60 s: alive 30 s more
    assert t.alive("c2", 90.0) and not t.alive("c2", 90.1)
    assert t.due(100.0) == [] and len(t) == 0


def test_renewal_stops_at_the_most_total_time_and_when_settled() -> None:
    t = _table(max_total_s=120.0)
    t.opened("c")
    t.track("c", "a", "G", "T", ["h1", "h2"], 0.0)
    t.forget("h2")  # acked through this proxy
    (h,) = t.due(50.0)
    t.renewed(h.handle, 50.0)
    (h,) = t.due(100.0)
    t.renewed(h.handle, 100.0)
    assert t.due(150.0) == [] and len(t) == 0  # handed out 150 s ago, past the 120 s


def test_a_failed_renewal_is_tried_again_until_the_deadline_and_the_table_is_bounded() -> None:
    t = _table(max_handles=2)
    t.opened("c")
    assert t.track("c", "a", "G", "T", ["h1", "h2", "h3"], 0.0) == 2 and t.not_tracked == 1
    assert t.track("", "a", "G", "T", ["h4"], 0.0) == 0  # no client id: its life cannot be told
    assert [h.handle for h in t.due(50.0)] == ["h1", "h2"]
    t.failed("h1", 50.0)
    t.failed("h2", 59.5)  # a retry would come after its deadline (60 s): dropped
    assert t.next_at() == 51.0 and len(t) == 1


@dataclass
class RenewBackend:
    answers: dict[str, TailraceError | None] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def renew(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> int:
        self.calls.append((broker_name, handle, invisible_ms))
        err = self.answers.get(handle)
        if err is not None:
            raise err
        return 0


def test_a_round_renews_what_is_due_and_drops_what_was_settled_elsewhere() -> None:
    backend = RenewBackend(
        {"acked": InvalidReceiptError("not in flight"), "down": BrokerUnavailableError("x")}
    )
    now = [50.0]
    r = Renewer(backend, _table(), clock=lambda: now[0])
    r.table.opened("c")
    r.track("c", "a", "G", "T", ["ok", "acked", "down"], 0.0)
    assert r.run_once(50.0) == 1
    assert sorted(backend.calls) == [("a", "acked", 60_000), ("a", "down", 60_000), ("a", "ok", 60_000)]
    assert len(r.table) == 2 and r.table.next_at() == 51.0  # "down" again in 1 s, "ok" at 100 s


def _with_renewer(tmp_path: Path, backend: PopBackend) -> tuple[object, Renewer]:
    svc = _service(tmp_path, backend)
    renewer = Renewer(RenewBackend(), _table())
    svc.renewer = svc.consumption.renewer = renewer
    return svc, renewer


def _as_client(context: object, client: str = "c1") -> object:
    context.metadata.append((CLIENT_ID, client))  # type: ignore[attr-defined]
    return context


def test_a_push_receive_written_whole_is_renewed_until_acked(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1), _popped(2)]])
    svc, renewer = _with_renewer(tmp_path, backend)
    frames = list(svc.ReceiveMessage(_receive(auto_renew=True), _as_client(_signed())))  # type: ignore[attr-defined]
    assert frames[0].status.code == d.OK
    assert sorted(renewer.table._held) == [handle(offset=1), handle(offset=2)]
    hb = s.HeartbeatRequest(group=d.Resource(name="billing"))
    svc.Heartbeat(hb, _as_client(_signed()))  # type: ignore[attr-defined]
    assert renewer.table.alive("c1", 0.0)
    svc.AckMessage(_ack(handle(offset=1)), _signed())  # type: ignore[attr-defined]
    assert list(renewer.table._held) == [handle(offset=2)]


def test_a_push_receive_not_written_whole_or_not_auto_renew_is_not_renewed(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1), _popped(2)], [_popped(3)]])
    svc, renewer = _with_renewer(tmp_path, backend)
    frames = svc.ReceiveMessage(_receive(auto_renew=True), _as_client(_signed()))  # type: ignore[attr-defined]
    next(frames), next(frames)
    frames.close()  # broken mid-write: given back, not renewed
    assert len(renewer.table) == 0 and len(backend.changes) == 2
    list(svc.ReceiveMessage(_receive(), _as_client(_signed())))  # type: ignore[attr-defined]  # a SimpleConsumer's
    assert len(renewer.table) == 0
