"""What the RPC fuzz targets share: request strategies built from the
protobuf descriptors, calls with a deadline (field values, or raw bytes),
and the check that an error answer is one core/grpc_status.py documents.

Requests are mostly plausible (names the server knows, small numbers) with
one odd part at a time, so that a request gets past the first check and
reaches the code behind it; the odd parts are strings with odd characters
or a megabyte long, extreme and negative numbers, empty and very long lists,
unknown enum values."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import event
from hypothesis import strategies as st

from core import errors
from core.grpc_status import ERROR_CODE_KEY, TO_GRPC

F = FieldDescriptor
DEADLINE_S = 10.0  # every call; a unary call that reaches it hung
MAX_DETAIL = 2048  # an error echoes input cut short (core.errors.brief)
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four."""
    return st.integers(0, 3).flatmap(lambda i: odd if i == 0 else good)


def repeated(s: st.SearchStrategy[Any], n: int) -> st.SearchStrategy[Any]:
    """`s` drawn once and repeated about `n` times (hypothesis draws nothing
    that long itself)."""
    return st.tuples(s, st.integers(n // 2, n)).map(lambda p: p[0] * p[1])


ODD_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", ".", "..", "/", "a/b", "\x00", "%", "%RETRY%", "%SCHEDULER%", "__sys", "é", "*"]
    ),
    repeated(st.sampled_from(["a", "é", "%", "\u202e"]), 300),
    repeated(st.just("g"), 1 << 20),  # a megabyte of name
)
BOUNDS: dict[int, tuple[int, int]] = {
    F.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_ENUM: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_UINT32: (0, (1 << 32) - 1),
    F.TYPE_FIXED32: (0, (1 << 32) - 1),
    F.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    F.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    F.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    F.TYPE_UINT64: (0, (1 << 64) - 1),
    F.TYPE_FIXED64: (0, (1 << 64) - 1),
}


def integers(kind: int) -> st.SearchStrategy[int]:
    lo, hi = BOUNDS[kind]
    edges = sorted({v for v in (lo, hi, -1, 0, 1, 1 << 31, 1 << 32, 1 << 53) if lo <= v <= hi})
    return mostly(st.integers(max(lo, 0), 16), st.one_of(st.sampled_from(edges), st.integers(lo, hi)))


def scalar(f: FieldDescriptor, good: Mapping[str, Sequence[Any]]) -> st.SearchStrategy[Any]:
    known = good.get(f.name)
    if f.type == F.TYPE_STRING:
        base = st.sampled_from(list(known)) if known else st.text(max_size=8)
        return mostly(base, ODD_TEXT)
    if f.type == F.TYPE_BYTES:
        return mostly(
            st.binary(max_size=64),
            st.one_of(st.binary(max_size=2000), repeated(st.binary(min_size=1, max_size=2), 200_000)),
        )
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=32 if f.type == F.TYPE_FLOAT else 64)
    if known:
        return mostly(st.sampled_from(list(known)), integers(f.type))
    return integers(f.type)


def value(f: FieldDescriptor, good: Mapping[str, Sequence[Any]], depth: int) -> st.SearchStrategy[Any]:
    if f.type == F.TYPE_MESSAGE:
        if f.message_type.GetOptions().map_entry:
            k, v = (f.message_type.fields_by_name[n] for n in ("key", "value"))
            small = st.dictionaries(scalar(k, good), scalar(v, good), max_size=4)
            many = st.integers(100, 1500).map(lambda n: {f"k{i}": "v" for i in range(n)})
            return mostly(small, many)
        return messages(f.message_type, good, depth + 1)
    return scalar(f, good)


def small(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    """A small value of `f`'s type: what a very long list repeats (a long
    list of megabyte strings would only measure this machine's memory)."""
    if f.type == F.TYPE_MESSAGE:
        return st.just(GetMessageClass(f.message_type)())
    if f.type == F.TYPE_STRING:
        return st.text(max_size=8)
    if f.type == F.TYPE_BYTES:
        return st.binary(max_size=8)
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT, F.TYPE_BOOL):
        return st.just(0)
    return integers(f.type)


def field_strategy(
    f: FieldDescriptor, good: Mapping[str, Sequence[Any]], depth: int
) -> st.SearchStrategy[Any]:
    one = value(f, good, depth)
    if not f.is_repeated or (f.type == F.TYPE_MESSAGE and f.message_type.GetOptions().map_entry):
        return one
    long = repeated(small(f).map(lambda x: [x]), 3000)
    return mostly(st.lists(one, max_size=3), st.one_of(st.just([]), long))


def messages(
    desc: Descriptor, good: Mapping[str, Sequence[Any]], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Requests of type `desc`: each field drawn (or left unset), one member
    of each oneof at most; `good` gives plausible values per field name."""
    cls = GetMessageClass(desc)
    if depth > 3:
        return st.just(cls())
    plain = {
        f.name: field_strategy(f, good, depth)
        for f in desc.fields
        if f.containing_oneof is None or f.containing_oneof.name.startswith("_")
    }
    choices = [
        st.one_of(
            st.just({}), *(field_strategy(f, good, depth).map(lambda v, n=f.name: {n: v}) for f in o.fields)
        )
        for o in desc.oneofs
        if not o.name.startswith("_")
    ]
    fields = st.fixed_dictionaries(plain)  # unset is the default value, which the odd values include

    def build(parts: tuple[dict[str, Any], ...]) -> Message:
        kwargs: dict[str, Any] = {}
        for p in parts:
            kwargs.update(p)
        return cls(**kwargs)

    return st.tuples(fields, *choices).map(build)


# ---- calls ------------------------------------------------------------------------


def call(
    channel: grpc.Channel, method: str, request: Any, kind: str, raw: bool = False
) -> tuple[list[Any] | None, grpc.RpcError | None]:
    """Call `method` (`kind`: unary_unary, unary_stream, stream_stream) with
    `request` (a message, raw bytes, or for a client stream a list of them);
    (responses, None) or (None, the error). A server stream is read to its
    first answer (a replication stream to its first two: the handshake's
    reply and a chunk or heartbeat) and then cancelled (the client's
    CANCELLED is then not the server's answer)."""
    ser: Callable[[Any], bytes] | None = None if raw else (lambda m: m.SerializeToString())
    de: Callable[[bytes], bytes] | None = None if raw else (lambda b: b)
    try:
        if kind == "unary_unary":
            return [channel.unary_unary(method, ser, de)(request, timeout=DEADLINE_S)], None
        if kind == "unary_stream":
            return _first_answers(channel.unary_stream(method, ser, de)(request, timeout=DEADLINE_S), 1), None
        stream = channel.stream_stream(method, ser, de)(iter(request), timeout=DEADLINE_S)
        return _first_answers(stream, 2), None
    except grpc.RpcError as exc:
        return None, exc


def _first_answers(stream: Any, most: int) -> list[Any]:
    got: list[Any] = []
    try:
        for answer in stream:
            got.append(answer)
            if len(got) >= most:
                break
    finally:
        stream.cancel()
    if got or stream.code() in (None, grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        return got
    raise stream  # the stream's error, as a unary call raises it


def check_error(exc: grpc.RpcError, allowed_plain: frozenset[grpc.StatusCode] = frozenset()) -> str:
    """The error must be one core/grpc_status.py documents: never INTERNAL,
    UNKNOWN or a deadline (a hang); with a Tailrace code, exactly that
    code's status; without one, gRPC's own RESOURCE_EXHAUSTED (a request
    over the receive limit, too many calls at once) or `allowed_plain`. The
    detail is short (one that echoes a megabyte of input does not even
    reach the client: it exceeds gRPC's metadata limit). Returns a label
    for the statistics."""
    status = exc.code()
    details = exc.details() or ""
    assert status not in NEVER, f"{status.name}: {details[:300]}"
    assert len(details) <= MAX_DETAIL, f"{len(details)} characters of detail: {details[:200]}..."
    codes = [str(v) for k, v in (exc.trailing_metadata() or ()) if k == ERROR_CODE_KEY]
    if codes:
        [code] = codes
        assert errors.for_code(code) is not errors.TailraceError, f"undocumented error code {code}"
        assert TO_GRPC[code] == status, f"{code} answered as {status.name}, documented {TO_GRPC[code].name}"
        return code
    if status in allowed_plain:
        return status.name
    # gRPC's own refusals: a request over the receive limit, the server's concurrent-call limit
    own = ("larger than max", "Concurrent RPC limit exceeded")
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and any(s in details for s in own), (
        f"{status.name} with no code: {details[:300]}"
    )
    return status.name


# ---- one call, checked ----------------------------------------------------------


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Name
    request: Descriptor
    response: Descriptor
    kind: str  # unary_unary, unary_stream or stream_stream

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def methods_of(module: Any) -> list[Method]:
    """Every method of every service `module` (a generated *_pb2) defines."""
    out = []
    for service in module.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            kind = ("stream_" if m.client_streaming else "unary_") + (
                "stream" if m.server_streaming else "unary"
            )
            out.append(Method(f"/{service.full_name}/{m.name}", m.input_type, m.output_type, kind))
    return out


def requests(m: Method, good: Mapping[str, Sequence[Any]]) -> st.SearchStrategy[Any]:
    one = messages(m.request, good)
    return st.lists(one, max_size=3) if m.kind.startswith("stream_") else one


def raw_requests(m: Method) -> st.SearchStrategy[Any]:
    one = st.one_of(
        st.binary(max_size=200), messages(m.request, {}).map(lambda x: x.SerializeToString()[:-1])
    )
    return st.lists(one, max_size=3) if m.kind.startswith("stream_") else one


@dataclass
class Target:
    """A server under fuzzing: its channel, what counts as its stored state,
    and per method the plain statuses (no Tailrace code) it may answer."""

    channel: grpc.Channel
    state: Callable[[], Any]
    plain: Mapping[str, frozenset[grpc.StatusCode]] = field(default_factory=dict)
    refusals: Mapping[str, Callable[[bytes], str | None]] = field(default_factory=dict)

    def exercise(self, m: Method, request: Any, raw: bool) -> None:
        """Call `m`; an error must be documented, and an error (or a refusal
        in the answer, `refusals`) must leave the stored state as it was."""
        before = self.state()
        answers, err = call(self.channel, m.path, request, m.kind, raw)
        if err is not None:
            label = check_error(err, self.plain.get(m.name, frozenset()))
            event(f"{'raw' if raw else 'fields'}: {label}")
            after = self.state()
            assert after == before, f"{m.name} answered {label} and changed the stored state"
            return
        assert answers is not None
        response = GetMessageClass(m.response)
        parsed = [response.FromString(a) for a in answers]  # the server answers well-formed messages
        refused = self.refusals.get(m.name)
        why = refused(answers[0]) if refused is not None and answers else None
        if why:
            event(f"{'raw' if raw else 'fields'}: answered {why}")
            assert self.state() == before, f"{m.name} answered {why} and changed the stored state"
        else:
            event(
                f"{'raw' if raw else 'fields'}: OK ({len(parsed)} answers)"
                if m.kind != "unary_unary"
                else "OK"
            )
