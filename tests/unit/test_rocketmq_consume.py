"""The consume-side v2 RPCs (core/rocketmq/consume.py) with a fake backend
and a fake call context: the receive stream's frames, long polling on a fake
clock, the cap on held receives, acks grouped per broker group, the new
handle of a change, assignments, and refusals that pop nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import BrokerUnavailableError, InvalidReceiptError, TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pop.handles import Receipt, broker_of, encode_handle, handle_key
from core.pop.ops import PoppedMessage
from core.record import decode_record
from core.rocketmq.consume import Popped
from core.rocketmq.service import MessagingService
from core.rocketmq.settings import ServerSettings
from core.rocketmq.streams import Deadlines, DeadlineWatch, StreamGate
from core.route import TopicRoute
from core.security.acl import AclFile
from core.security.mqv2 import Mqv2Policy, date_of, header
from tests.helpers.records import make
from tests.helpers.rocketmq_cases import CAPTURED_MS, _route
from tests.unit.test_rocketmq_service import FakeBackend, FakeContext

pytestmark = pytest.mark.unit
SECRET = "reader-secret-0123456789"


def handle(broker: str = "a", offset: int = 5) -> str:
    return encode_handle(handle_key("", broker), Receipt(broker, "billing", "orders", 0, offset, 1))


@dataclass
class PopBackend(FakeBackend):
    """Pops answer from `batches` in turn (then nothing); each advances the fake clock by its wait."""

    route_of: TopicRoute = field(default_factory=lambda: _route(("a", 4, True), ("b", 4, True)))
    batches: list[list[PoppedMessage]] = field(default_factory=list)
    held: bool = True
    now: float = 0.0
    pops: list[tuple[str, int, int, int, str]] = field(default_factory=list)
    acks: list[tuple[str, list[str]]] = field(default_factory=list)
    changes: list[tuple[str, str, int]] = field(default_factory=list)
    dead: list[tuple[str, str, str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # handles the master refuses
    pop_fail: TailraceError | None = None
    max_hold_ms: int = 60_000  # the master's pull.max_wait_ms

    def pop(
        self, broker_name: str, group: str, topic: str, invisible_ms: int, wait_ms: int,
        max_messages: int, tag_expression: str, timeout_s: float,
    ) -> Popped:  # fmt: skip
        self.pops.append((broker_name, invisible_ms, wait_ms, max_messages, tag_expression))
        if self.pop_fail is not None:
            raise self.pop_fail
        got = self.batches.pop(0) if self.batches else []
        if not got:
            self.now += min(wait_ms, self.max_hold_ms) / 1000
        return Popped(got, "10.0.0.1:10911", self.held)

    def ack(
        self, broker_name: str, group: str, topic: str, handles: Sequence[str], timeout_s: float
    ) -> list[TailraceError | None]:
        self.acks.append((broker_name, list(handles)))
        return [InvalidReceiptError("acked already") if h in self.refuse else None for h in handles]

    def change_invisible(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> str:
        if handle in self.refuse:
            raise InvalidReceiptError("handed out again since")
        self.changes.append((broker_name, handle, invisible_ms))
        return handle + "-2"

    def dead_letter(self, broker_name: str, group: str, topic: str, handle: str, timeout_s: float) -> None:
        if handle in self.refuse:
            raise InvalidReceiptError("acked already")
        self.dead.append((broker_name, group, topic, handle))


@dataclass
class FakeWatch:
    """The receive's write deadlines, fired by hand."""

    armed: dict[int, tuple[float, Callable[[], None]]] = field(default_factory=dict)
    n: int = 0

    def arm(self, at: float, action: Callable[[], None]) -> int:
        self.n += 1
        self.armed[self.n] = (at, action)
        return self.n

    def disarm(self, token: int) -> None:
        self.armed.pop(token, None)

    def fire(self) -> None:
        for _, action in list(self.armed.values()):
            action()


def _acl(tmp_path: Path) -> AclFile:
    f = tmp_path / "acl.toml"
    f.write_text(
        f'[[account]]\naccess_key = "app"\nsecret_key = "{SECRET}"\nsubscribe = ["orders"]\n'
        'groups = ["billing"]\n'
        f'[[account]]\naccess_key = "app2"\nsecret_key = "{SECRET}"\nsubscribe = ["orders"]\n'
        'groups = ["billing"]\n'
    )
    f.chmod(0o600)
    return AclFile(f, 0)


def _service(
    tmp_path: Path, backend: PopBackend, receives: int = 4, per_account: int = 0
) -> MessagingService:
    gate = StreamGate(receives, per_account or receives, "held receives")
    svc = MessagingService(
        backend, Mqv2Policy(_acl(tmp_path)), "127.0.0.1:8081", lambda: ServerSettings(1024),
        wall_ms=lambda: CAPTURED_MS, receives=gate,
    )  # fmt: skip
    svc.consumption.clock = lambda: backend.now
    svc.consumption.writes = FakeWatch()  # type: ignore[assignment]
    return svc


def _signed(left_s: float = 8.0, account: str = "app") -> FakeContext:
    return FakeContext(list(header(account, SECRET, date_of(CAPTURED_MS))), left_s=left_s)


def _popped(offset: int, attempt: int = 1) -> PoppedMessage:
    raw = make(topic="orders", queue_id=0, queue_offset=offset, body=f"m{offset}".encode(), tags="t",
               props={"UNIQ_KEY": f"id{offset}"})  # fmt: skip
    return PoppedMessage(decode_record(raw), raw, attempt, handle(offset=offset), 0)


def _receive(group: str = "billing", broker: str = "a", **kw: object) -> s.ReceiveMessageRequest:
    r = s.ReceiveMessageRequest(group=d.Resource(name=group), batch_size=16, **kw)  # type: ignore[arg-type]
    r.message_queue.topic.name = "orders"
    r.message_queue.id = 0
    r.message_queue.broker.name = broker
    if not r.auto_renew:
        r.invisible_duration.FromSeconds(15)
    r.long_polling_timeout.FromSeconds(5)
    return r


def test_receive_streams_status_then_messages_then_the_delivery_time(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(5), _popped(6, attempt=2)]])
    frames = list(_service(tmp_path, backend).ReceiveMessage(_receive(), _signed()))
    assert [f.WhichOneof("content") for f in frames] == ["status", "message", "message", "delivery_timestamp"]
    assert frames[0].status.code == d.OK and frames[3].delivery_timestamp.ToMilliseconds() == CAPTURED_MS
    m = frames[2].message
    assert (m.body, m.system_properties.delivery_attempt, m.system_properties.message_id) == (b"m6", 2, "id6")
    assert m.system_properties.receipt_handle == handle(offset=6)
    assert m.system_properties.invisible_duration.ToMilliseconds() == 15_000
    assert backend.pops == [("a", 15_000, 5_000, 16, "*")]  # the named group, any queue, the long poll


def test_nothing_after_the_long_poll_is_message_not_found(tmp_path: Path) -> None:
    backend = PopBackend()
    svc = _service(tmp_path, backend)
    backend.now = 100.0
    frames = list(svc.ReceiveMessage(_receive(), _signed()))
    assert [f.status.code for f in frames[:1]] == [d.MESSAGE_NOT_FOUND]
    assert frames[-1].HasField("delivery_timestamp") and len(frames) == 2
    assert backend.now == pytest.approx(105.0)  # held the whole long poll, not more


def test_a_master_holding_less_long_is_asked_again_until_the_poll_ends(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[], [_popped(9)]], max_hold_ms=2_000)
    frames = list(_service(tmp_path, backend).ReceiveMessage(_receive(), _signed()))
    assert [f.WhichOneof("content") for f in frames] == ["status", "message", "delivery_timestamp"]
    assert [p[2] for p in backend.pops] == [5_000, 3_000]  # the rest of the poll


def test_a_last_short_pop_not_held_after_a_held_one_is_still_not_found(tmp_path: Path) -> None:
    backend = PopBackend(max_hold_ms=4_800)
    svc = _service(tmp_path, backend)
    real_pop = backend.pop

    def pop(*args: object) -> Popped:
        out = real_pop(*args)  # type: ignore[arg-type]
        return Popped(out.messages, out.store_host, len(backend.pops) == 1)  # the second: too short to hold

    backend.pop = pop  # type: ignore[method-assign]
    frames = list(svc.ReceiveMessage(_receive(), _signed()))
    assert frames[0].status.code == d.MESSAGE_NOT_FOUND and len(backend.pops) == 2


def test_a_master_at_its_most_long_polls_is_too_many_requests(tmp_path: Path) -> None:
    backend = PopBackend(held=False)
    frames = list(_service(tmp_path, backend).ReceiveMessage(_receive(), _signed()))
    assert frames[0].status.code == d.TOO_MANY_REQUESTS and len(backend.pops) == 1


def test_push_receives_get_the_proxys_invisible_time(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1)]])
    frames = list(_service(tmp_path, backend).ReceiveMessage(_receive(auto_renew=True), _signed()))
    assert frames[1].message.system_properties.invisible_duration.ToMilliseconds() == 60_000
    assert backend.pops[0][1] == 60_000


def test_held_receives_are_capped(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1)]])
    svc = _service(tmp_path, backend, receives=1)
    assert svc.consumption.receives.enter("another") is None  # another receive holds the one place
    frames = list(svc.ReceiveMessage(_receive(), _signed()))
    assert [f.status.code for f in frames] == [d.TOO_MANY_REQUESTS] and backend.pops == []
    svc.consumption.receives.leave("another")
    assert next(iter(svc.ReceiveMessage(_receive(), _signed()))).status.code == d.OK
    assert svc.consumption.receives.open_streams() == 0  # every receive gave its place back


def test_refused_receives_pop_nothing(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1)]])
    svc = _service(tmp_path, backend)
    sql = _receive()
    sql.filter_expression.type = d.SQL
    sql.filter_expression.expression = "a > 1"
    no_invisible = _receive()
    no_invisible.ClearField("invisible_duration")
    cases = [
        (_receive(), FakeContext(), d.UNAUTHORIZED),
        (_receive(group="other"), _signed(), d.FORBIDDEN),
        (_receive(group="bad group!"), _signed(), d.ILLEGAL_CONSUMER_GROUP),
        (sql, _signed(), d.UNSUPPORTED),
        (no_invisible, _signed(), d.ILLEGAL_INVISIBLE_TIME),
        (_receive(), _signed(left_s=3.0), d.ILLEGAL_POLLING_TIME),  # the deadline leaves under 5 s
        (_receive(broker=""), _signed(), d.BAD_REQUEST),
    ]
    for request, context, code in cases:
        frames = list(svc.ReceiveMessage(request, context))
        assert [f.status.code for f in frames] == [code], code
    assert backend.pops == []


def test_a_failed_pop_is_a_status_without_the_clusters_text(tmp_path: Path) -> None:
    backend = PopBackend(pop_fail=BrokerUnavailableError("10.9.9.9:10911 is down"))
    frames = list(_service(tmp_path, backend).ReceiveMessage(_receive(), _signed()))
    assert frames[0].status.code == d.HA_NOT_AVAILABLE and "10.9.9.9" not in frames[0].status.message


def test_messages_popped_for_a_client_that_left_come_back_soon(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1)]])
    context = _signed()
    context.active = False
    assert list(_service(tmp_path, backend).ReceiveMessage(_receive(), context)) == []
    assert backend.changes == [("a", handle(offset=1), 1_000)]


def _ack(*handles: str) -> s.AckMessageRequest:
    entries = [s.AckMessageEntry(message_id=f"id{i}", receipt_handle=h) for i, h in enumerate(handles)]
    return s.AckMessageRequest(
        group=d.Resource(name="billing"), topic=d.Resource(name="orders"), entries=entries
    )


def test_acks_go_one_call_per_broker_group_with_a_status_per_entry(tmp_path: Path) -> None:
    backend = PopBackend(refuse={handle("b", 2)})
    handles = [handle("a", 1), handle("b", 2), "forged", handle("a", 3), handle("b", 4)]
    reply = _service(tmp_path, backend).AckMessage(_ack(*handles), _signed())
    assert sorted(backend.acks) == [("a", [handles[0], handles[3]]), ("b", [handles[1], handles[4]])]
    codes = [e.status.code for e in reply.entries]
    assert codes == [d.OK, d.INVALID_RECEIPT_HANDLE, d.INVALID_RECEIPT_HANDLE, d.OK, d.OK]
    assert [e.message_id for e in reply.entries] == [f"id{i}" for i in range(5)]
    assert reply.status.code == d.MULTIPLE_RESULTS
    one = _service(tmp_path, backend).AckMessage(_ack(handle("a", 7)), _signed())
    assert one.status.code == d.OK  # the official client reads only this


def test_refused_acks_ack_nothing(tmp_path: Path) -> None:
    backend = PopBackend()
    svc = _service(tmp_path, backend)
    assert svc.AckMessage(_ack(handle()), FakeContext()).status.code == d.UNAUTHORIZED
    forbidden = _ack(handle())
    forbidden.group.name = "other"
    reply = svc.AckMessage(forbidden, _signed())
    assert reply.status.code == d.FORBIDDEN and reply.entries[0].status.code == d.FORBIDDEN
    assert svc.AckMessage(_ack(), _signed()).status.code == d.BAD_REQUEST
    assert backend.acks == []


def _change(h: str, seconds: int = 30) -> s.ChangeInvisibleDurationRequest:
    r = s.ChangeInvisibleDurationRequest(
        group=d.Resource(name="billing"), topic=d.Resource(name="orders"), receipt_handle=h, message_id="id"
    )
    r.invisible_duration.FromSeconds(seconds)
    return r


def test_a_change_answers_the_new_handle_and_a_failure_the_old_one(tmp_path: Path) -> None:
    backend = PopBackend(refuse={handle("a", 2)})
    svc = _service(tmp_path, backend)
    ok = svc.ChangeInvisibleDuration(_change(handle("a", 1)), _signed())
    assert ok.status.code == d.OK and ok.receipt_handle == handle("a", 1) + "-2"
    assert backend.changes == [("a", handle("a", 1), 30_000)]
    stale = svc.ChangeInvisibleDuration(_change(handle("a", 2)), _signed())
    assert stale.status.code == d.INVALID_RECEIPT_HANDLE and stale.receipt_handle == handle("a", 2)
    forged = svc.ChangeInvisibleDuration(_change("forged"), _signed())
    assert forged.status.code == d.INVALID_RECEIPT_HANDLE and forged.receipt_handle == "forged"
    too_long = svc.ChangeInvisibleDuration(_change(handle("a", 1), 13 * 3600), _signed())
    assert too_long.status.code == d.ILLEGAL_INVISIBLE_TIME
    assert svc.ChangeInvisibleDuration(_change(handle(), 0), _signed()).status.code == d.OK  # visible at once


def _forward(h: str, group: str = "billing") -> s.ForwardMessageToDeadLetterQueueRequest:
    return s.ForwardMessageToDeadLetterQueueRequest(
        group=d.Resource(name=group), topic=d.Resource(name="orders"), receipt_handle=h, message_id="id",
        delivery_attempt=99, max_delivery_attempts=1,
    )  # fmt: skip


def test_a_forward_dead_letters_on_the_handles_broker_group_and_refusals_store_nothing(
    tmp_path: Path,
) -> None:
    backend = PopBackend(refuse={handle("b", 2)})
    svc = _service(tmp_path, backend)
    assert svc.ForwardMessageToDeadLetterQueue(_forward(handle("b", 1)), _signed()).status.code == d.OK
    assert backend.dead == [("b", "billing", "orders", handle("b", 1))]
    stale = svc.ForwardMessageToDeadLetterQueue(_forward(handle("b", 2)), _signed())
    assert stale.status.code == d.INVALID_RECEIPT_HANDLE
    forged = svc.ForwardMessageToDeadLetterQueue(_forward("forged"), _signed())
    assert forged.status.code == d.INVALID_RECEIPT_HANDLE
    assert (
        svc.ForwardMessageToDeadLetterQueue(_forward(handle()), FakeContext()).status.code == d.UNAUTHORIZED
    )
    other = svc.ForwardMessageToDeadLetterQueue(_forward(handle(), group="other"), _signed())
    assert other.status.code == d.FORBIDDEN
    assert backend.dead == [("b", "billing", "orders", handle("b", 1))]  # the refused ones stored nothing


def test_assignments_are_each_group_with_a_master_at_this_proxy(tmp_path: Path) -> None:
    backend = PopBackend(route_of=_route(("a", 4, True), ("b", 4, False), ("c", 2, True)))
    svc = _service(tmp_path, backend)
    req = s.QueryAssignmentRequest(topic=d.Resource(name="orders"), group=d.Resource(name="billing"))
    reply = svc.QueryAssignment(req, _signed())
    assert reply.status.code == d.OK
    got = [(a.message_queue.broker.name, a.message_queue.id) for a in reply.assignments]
    assert got == [("a", -1), ("c", -1)]
    assert reply.assignments[0].message_queue.broker.endpoints.addresses[0].port == 8081
    backend.route_of = _route(("a", 4, False))
    assert svc.QueryAssignment(req, _signed()).status.code == d.HA_NOT_AVAILABLE
    req.group.name = "other"
    assert svc.QueryAssignment(req, _signed()).status.code == d.FORBIDDEN


def test_a_handle_names_its_broker_group_in_clear() -> None:
    assert broker_of(handle("b-2")) == "b-2"
    for bad in ("", "forged", "v1.!!.x", "v2.YQ.YQ", "v1..YQ"):
        with pytest.raises(InvalidReceiptError):
            broker_of(bad)


def test_a_receive_holds_its_place_until_its_last_frame_is_written(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1), _popped(2)]])
    svc = _service(tmp_path, backend, receives=1)
    frames = svc.ReceiveMessage(_receive(), _signed())
    assert next(frames).status.code == d.OK and next(frames).HasField("message")
    assert svc.consumption.receives.open_streams() == 1  # frames still to write: still counted
    rest = list(frames)
    assert [f.WhichOneof("content") for f in rest] == ["message", "delivery_timestamp"]
    assert svc.consumption.receives.open_streams() == 0
    assert svc.consumption.writes.armed == {} and backend.changes == []  # type: ignore[attr-defined]


def test_frames_not_written_in_time_end_the_call_and_the_batch_comes_back(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1), _popped(2)]])
    svc = _service(tmp_path, backend, receives=1)
    context = _signed(left_s=3000.0)  # a client's own deadline is no bound
    frames = svc.ReceiveMessage(_receive(), context)
    assert next(frames).status.code == d.OK
    watch = svc.consumption.writes
    ((at, _),) = watch.armed.values()  # type: ignore[attr-defined]
    assert at == pytest.approx(backend.now + svc.consumption.write_s)
    watch.fire()  # type: ignore[attr-defined]  # the client did not read the next frame in time
    assert not context.active  # the call is cancelled: grpc stops writing, the thread is freed
    frames.close()  # (what grpc's dropping of the stream does)
    assert [c[1] for c in backend.changes] == [handle(offset=1), handle(offset=2)]
    assert {c[2] for c in backend.changes} == {1_000}
    assert svc.consumption.receives.open_streams() == 0


def test_deadlines_run_each_armed_action_once_when_its_time_comes() -> None:
    fired: list[str] = []
    dl = Deadlines()
    a = dl.arm(5.0, lambda: fired.append("a"))
    dl.arm(2.0, lambda: fired.append("b"))
    c = dl.arm(1.0, lambda: fired.append("c"))
    dl.disarm(c)
    assert dl.next_at() == 2.0 and len(dl) == 2
    for action in dl.due(4.9):
        action()
    assert fired == ["b"] and dl.next_at() == 5.0
    dl.disarm(a)
    assert dl.due(100.0) == [] and dl.next_at() is None


def test_the_watch_thread_runs_an_action_past_its_time() -> None:
    watch = DeadlineWatch()
    fired = threading.Event()
    watch.arm(time.monotonic() + 0.05, fired.set)
    kept = watch.arm(time.monotonic() + 0.05, lambda: pytest.fail("disarmed"))
    watch.disarm(kept)
    try:
        assert fired.wait(5.0)
    finally:
        watch.close()


def test_a_stream_broken_mid_write_gives_the_whole_batch_back(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1), _popped(2), _popped(3)]])
    svc = _service(tmp_path, backend)
    context = _signed()
    frames = svc.ReceiveMessage(_receive(), context)
    assert next(frames).status.code == d.OK and next(frames).HasField("message")
    context.active = False  # the client went away after the first message
    frames.close()  # grpc stops asking; the stream is dropped
    # the message written too: the client drops a batch whose stream failed
    assert [c[1] for c in backend.changes] == [handle(offset=o) for o in (1, 2, 3)]
    assert svc.consumption.receives.open_streams() == 0


def test_one_account_cannot_take_every_held_receive(tmp_path: Path) -> None:
    backend = PopBackend(batches=[[_popped(1)], [_popped(2)]])
    svc = _service(tmp_path, backend, receives=3, per_account=2)
    gate = svc.consumption.receives
    assert gate.enter("account 'app'") is None and gate.enter("account 'app'") is None  # app holds its two
    frames = list(svc.ReceiveMessage(_receive(), _signed()))
    assert [f.status.code for f in frames] == [d.TOO_MANY_REQUESTS] and backend.pops == []
    assert "'app'" in frames[0].status.message
    other = list(svc.ReceiveMessage(_receive(), _signed(account="app2")))  # another account still gets one
    assert other[0].status.code == d.OK and len(backend.pops) == 1


def test_handles_naming_made_up_broker_groups_cost_no_backend_call_and_one_refresh(tmp_path: Path) -> None:
    backend = PopBackend()
    svc = _service(tmp_path, backend)
    made_up = [handle(f"x{i}", i) for i in range(1000)] + [handle("bad name!", 1), handle("a" * 65, 2)]
    reply = svc.AckMessage(_ack(*made_up, handle("a", 7)), _signed())
    codes = [e.status.code for e in reply.entries]
    assert codes == [d.INVALID_RECEIPT_HANDLE] * len(made_up) + [d.OK]
    assert backend.acks == [("a", [handle("a", 7)])]  # only the real group's
    assert (backend.routes, backend.refreshes) == (2, 1)  # one refresh for the whole call
    for call in (
        lambda: svc.ChangeInvisibleDuration(_change(handle("x1")), _signed()).status.code,
        lambda: svc.ForwardMessageToDeadLetterQueue(_forward(handle("x1")), _signed()).status.code,
    ):
        assert call() == d.INVALID_RECEIPT_HANDLE
    assert backend.changes == [] and backend.dead == [] and backend.refreshes == 3
    frames = list(svc.ReceiveMessage(_receive(broker="x1"), _signed()))
    assert [f.status.code for f in frames] == [d.BAD_REQUEST] and backend.pops == []  # RocketMQ's code


def test_a_handle_of_a_group_with_no_live_master_is_ha_not_available_without_a_call(tmp_path: Path) -> None:
    backend = PopBackend(route_of=_route(("a", 4, True), ("b", 4, False)))
    reply = _service(tmp_path, backend).AckMessage(_ack(handle("b", 1), handle("a", 2)), _signed())
    assert [e.status.code for e in reply.entries] == [d.HA_NOT_AVAILABLE, d.OK]
    assert backend.acks == [("a", [handle("a", 2)])] and backend.refreshes == 0


def test_an_ack_stops_at_the_clients_deadline(tmp_path: Path) -> None:
    backend = PopBackend()
    reply = _service(tmp_path, backend).AckMessage(_ack(handle("a", 1), handle("b", 2)), _signed(left_s=0.1))
    assert [e.status.code for e in reply.entries] == [d.PROXY_TIMEOUT] * 2 and backend.acks == []
