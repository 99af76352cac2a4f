"""Fuzzing what `tailrace proxy` reads from RocketMQ 5 clients: any v2
message either becomes a native record (and its properties read back to
what was sent) or is refused with a v2 code that is not OK, never another
exception; any `authorization` header either verifies, is anonymous, or is
refused as unauthenticated."""

from __future__ import annotations

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from core.errors import UnauthenticatedError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.rocketmq import translate
from core.rocketmq.codes import Refused
from core.security.mqv2 import verify_mqv2
from tests.fuzz.documents import mostly
from tests.fuzz.profiles import examples

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

odd_text = st.one_of(
    st.sampled_from(["", " ", "tag|x", "k k", "UNIQ_KEY", "%RETRY%g", "a\nb"]), st.text(max_size=40)
)
name = mostly(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), odd_text)


@st.composite
def v2_messages(draw: st.DrawFn) -> d.Message:
    """Mostly plausible messages with one odd part at a time."""
    namespace = draw(mostly(st.just(""), st.just("ns")))
    m = d.Message(topic=d.Resource(name=draw(name), resource_namespace=namespace))
    m.body = draw(mostly(st.binary(min_size=1, max_size=300), st.binary(max_size=300)))
    sp = m.system_properties
    sp.message_id = draw(name)
    group = draw(st.booleans())
    kind = d.FIFO if group else d.NORMAL
    sp.message_type = draw(mostly(st.just(kind), st.integers(min_value=0, max_value=9)))  # type: ignore[assignment]
    sp.body_encoding = draw(mostly(st.just(d.IDENTITY), st.integers(min_value=0, max_value=3)))  # type: ignore[assignment]
    if draw(st.booleans()):
        sp.tag = draw(name)
    sp.keys.extend(draw(st.lists(name, max_size=3)))
    if draw(mostly(st.just(group), st.booleans())):
        sp.message_group = draw(name)
    if draw(mostly(st.just(False), st.just(True))):
        sp.body_digest.type = draw(st.integers(min_value=0, max_value=4))  # type: ignore[assignment]
        sp.body_digest.checksum = draw(st.text(alphabet="0123456789ABCDEFabcdef", max_size=40))
    if draw(st.booleans()):
        sp.born_timestamp.seconds = draw(mostly(st.integers(0, 2**33), st.integers(-(2**40), 2**40)))
    if draw(mostly(st.just(False), st.just(True))):
        sp.delivery_timestamp.seconds = 1
    for k, v in draw(st.dictionaries(name, odd_text, max_size=3)).items():
        m.user_properties[k] = v
    return m


@settings(max_examples=examples(1))
@given(v2_messages())
@example(d.Message(topic=d.Resource(name="t"), body=b"x"))  # no message id
def test_a_v2_message_is_stored_or_refused(m: d.Message) -> None:
    try:
        got = translate.incoming(m, 256, 0)
    except Refused as exc:
        assert exc.code not in (d.OK, d.CODE_UNSPECIFIED) and exc.message
        event(f"refused {d.Code.Name(exc.code)}")
        return
    event("stored")
    assert got.body and len(got.body) <= 256 and got.born_ms >= 0
    back = translate.read_back(got.tags, got.keys, got.properties)
    assert back["message_id"] == m.system_properties.message_id
    assert back["user_properties"] == dict(m.user_properties)
    joined = " ".join(m.system_properties.keys)
    assert back["keys"] == (joined.split(" ") if joined else [])  # a key with a space reads back split


headers = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda ak, signed, sig: f"MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders={signed}, Signature={sig}",
        st.sampled_from(["", "myak", "nobody", "a b"]),
        st.sampled_from(["x-mq-date-time", "host", ""]),
        st.text(alphabet="0123456789abcdef", min_size=38, max_size=42),
    ),
)


@settings(max_examples=examples(1))
@given(headers, st.text(max_size=20))
def test_any_authorization_header_verifies_or_is_refused(header: str, date: str) -> None:
    md = [("authorization", header), ("x-mq-date-time", date)]
    try:
        who = verify_mqv2(md, 1_795_674_091_000, lambda ak: "mysk" if ak == "myak" else None)
    except UnauthenticatedError as exc:
        assert str(exc)
        event("refused")
        return
    assert who is None  # a random header is anonymous at most: never an account
    event("anonymous")
