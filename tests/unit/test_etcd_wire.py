"""The gateway's JSON traps, each on canned answers (copied from etcd 3.4.23),
and the transport's failover rules with the network replaced (no socket)."""

from __future__ import annotations

import base64
import json

import pytest

from core.etcd import wire
from core.etcd.errors import EtcdError, EtcdOutcomeUnknown, EtcdUnavailable
from core.etcd.model import Compare, KeyValue, Op, prefix_end
from core.etcd.transport import Transport, _NoAnswer, _NotSent, decode

pytestmark = pytest.mark.unit
LEASE_NOT_FOUND = "etcdserver: requested lease not found"
HEADER = {"cluster_id": "15118495548433857066", "member_id": "13668033151171901709", "raft_term": "2"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_int64_fields_arrive_as_strings() -> None:
    body = {
        "header": {**HEADER, "revision": "42"},
        "kvs": [{"key": b64(b"a"), "create_revision": "2", "mod_revision": "40", "version": "7",
                 "value": b64(b"v"), "lease": "4111120251972121105"}],
        "count": "1",
    }  # fmt: skip
    r = wire.range_result(body)
    assert r.revision == 42
    assert r.kvs == [KeyValue(b"a", b"v", 2, 40, 7, 4111120251972121105)]


def test_empty_range_has_no_kvs_and_no_count() -> None:
    assert wire.range_result({"header": {**HEADER, "revision": "1"}}).kvs == []


def test_omitted_defaults_read_as_zero_or_empty() -> None:
    # an empty value and lease 0 are left out of a key
    kv = wire.key_value({"key": b64(b"k"), "create_revision": "4", "mod_revision": "4", "version": "1"})
    assert (kv.value, kv.lease) == (b"", 0)
    assert wire.deleted_count({"header": {**HEADER, "revision": "3"}}) == 0
    assert wire.revision_of({}) == 0


def test_failed_txn_has_no_succeeded_and_each_response_by_kind() -> None:
    body = {
        "header": {**HEADER, "revision": "3"},
        "responses": [
            {"response_range": {"header": {"revision": "3"},
                                "kvs": [{"key": b64(b"a"), "create_revision": "2", "mod_revision": "2",
                                         "version": "1", "value": b64(b"1")}], "count": "1"}},
            {"response_delete_range": {"header": {"revision": "3"}}},
            {"response_put": {"header": {"revision": "3"}}},
        ],
    }  # fmt: skip
    t = wire.txn_result(body)
    assert t.succeeded is False and t.revision == 3
    assert t.responses[0] is not None and not isinstance(t.responses[0], int)
    assert t.responses[0].kvs[0].value == b"1"
    assert t.responses[1:] == [0, None]
    assert wire.txn_result({"header": {"revision": "5"}, "succeeded": True}).succeeded


def test_keys_and_values_are_base64_both_ways() -> None:
    body = wire.put_request(b"\x00\xffkey", b"val\n", lease=7)
    assert body == {"key": b64(b"\x00\xffkey"), "value": b64(b"val\n"), "lease": "7"}
    assert wire.put_request(b"k", b"") == {"key": b64(b"k"), "value": ""}


def test_prefix_range_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert wire.range_request(b"", prefix=True) == {"key": b64(b"\0"), "range_end": b64(b"\0")}
    assert wire.range_request(b"k", serializable=True) == {"key": b64(b"k"), "serializable": True}


def test_compare_and_op_encoding() -> None:
    assert wire.compare_json(Compare.create_revision(b"k", "=", 0)) == {
        "key": b64(b"k"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
    }  # fmt: skip
    assert wire.compare_json(Compare.value(b"k", "!=", b"x"))["value"] == b64(b"x")
    assert wire.compare_json(Compare.mod_revision(b"k", "<", 9))["mod_revision"] == "9"
    assert wire.compare_json(Compare.lease(b"k", ">", 1))["result"] == "GREATER"
    assert wire.op_json(Op.delete(b"p", prefix=True)) == {
        "request_delete_range": {"key": b64(b"p"), "range_end": b64(b"q")}
    }
    with pytest.raises(ValueError):
        Compare.version(b"k", "==", 1)  # type: ignore[arg-type]


def test_lease_ids_and_ttls_are_int64_strings() -> None:
    assert wire.lease_granted({"header": HEADER, "ID": "4111120251972121100", "TTL": "2"}) == (
        4111120251972121100, 2
    )  # fmt: skip
    assert wire.lease_request(4111120251972121100) == {"ID": "4111120251972121100"}


def test_keepalive_of_an_expired_lease_is_200_without_ttl() -> None:
    alive = {"result": {"header": HEADER, "ID": "5", "TTL": "5"}}
    expired = {"result": {"header": HEADER, "ID": "123"}}
    assert wire.keepalive_ttl(alive) == 5
    assert wire.keepalive_ttl(expired) == 0
    assert wire.time_to_live({"header": HEADER, "ID": "5", "TTL": "-1"}) == -1
    assert wire.time_to_live({"header": HEADER, "ID": "5", "TTL": "3", "grantedTTL": "5"}) == 3


@pytest.mark.parametrize(
    "body, code, text",
    [
        ({"error": LEASE_NOT_FOUND, "message": LEASE_NOT_FOUND,
          "code": 5}, 5, "lease not found"),
        ({"error": "unexpected EOF", "message": "unexpected EOF", "code": 3}, 3, "EOF"),
        ({"error": {"grpc_code": 14, "http_code": 503, "message": "transport is closing"}}, 14, "closing"),
    ],
)  # fmt: skip
def test_errors_in_either_shape(body: wire.Json, code: int, text: str) -> None:
    err = wire.error_of(body)
    assert err is not None and err.code == code and text in err.message
    assert wire.error_of({"header": HEADER}) is None


def test_errors_with_any_http_status() -> None:
    data = b'{"error":"etcdserver: requested lease not found","message":"x","code":5}'
    assert wire.error_of(decode(404, data)) is not None
    assert wire.error_of(decode(200, data)) is not None
    with pytest.raises(EtcdError, match="not a JSON object"):
        decode(404, b"404 page not found\n")


def test_watch_messages() -> None:
    created, events = wire.watch_message({"result": {"header": HEADER, "created": True}})
    assert created and events == []
    put = {
        "kv": {"key": b64(b"l"), "create_revision": "4", "mod_revision": "4", "version": "1", "lease": "9"}
    }
    delete = {"type": "DELETE", "kv": {"key": b64(b"l"), "mod_revision": "5"}}
    _, events = wire.watch_message({"result": {"header": HEADER, "events": [put, delete]}})
    assert [e.type for e in events] == ["PUT", "DELETE"]  # PUT is the default: no "type"
    assert events[0].kv.lease == 9 and events[1].kv == KeyValue(b"l", mod_revision=5)
    with pytest.raises(EtcdError, match="compact"):
        wire.watch_message(
            {"result": {"canceled": True, "compact_revision": "7", "cancel_reason": "compacted"}}
        )
    with pytest.raises(EtcdError):
        wire.watch_message({"error": {"grpc_code": 14, "message": "transport is closing"}})


def test_member_status() -> None:
    body = {"header": {**HEADER, "revision": "5"}, "version": "3.4.23", "leader": "13668033151171901709"}
    assert wire.member_status(body) == (13668033151171901709, 13668033151171901709)
    assert wire.member_status({"header": HEADER}) == (13668033151171901709, 0)


# -- failover rules, with the network replaced --------------------------------

OK_BODY = {"header": {"revision": "9"}}


class ScriptedTransport(Transport):
    """Each endpoint's next outcome: "refused" (not sent), "timeout" (sent,
    no answer), "unavailable:<etcd message>", or "ok"."""

    def __init__(self, outcomes: dict[int, str]) -> None:
        super().__init__([f"http://127.0.0.1:{i + 1}" for i in range(3)], 1.0, None)
        self.outcomes = outcomes
        self.tried: list[int] = []

    def _attempt(self, i: int, path: str, payload: bytes) -> wire.Json:
        self.tried.append(i)
        json.loads(payload)
        outcome = self.outcomes.get(i, "ok")
        if outcome == "refused":
            raise _NotSent("ConnectionRefusedError")
        if outcome == "timeout":
            raise _NoAnswer("TimeoutError")
        if outcome.startswith("unavailable:"):
            return {"error": "x", "code": 14, "message": outcome.split(":", 1)[1]}
        return OK_BODY


def test_sticks_with_the_endpoint_that_answered() -> None:
    t = ScriptedTransport({0: "refused"})
    assert t.call("/v3/kv/put", {}, write=True) == OK_BODY
    assert t.current == "http://127.0.0.1:2"
    t.call("/v3/kv/range", {}, write=False)
    assert t.tried == [0, 1, 1]


def test_a_read_that_timed_out_goes_to_the_next_endpoint() -> None:
    t = ScriptedTransport({0: "timeout"})
    assert t.call("/v3/kv/range", {}, write=False) == OK_BODY and t.tried == [0, 1]


def test_a_write_that_timed_out_is_never_retried() -> None:
    t = ScriptedTransport({0: "timeout"})
    with pytest.raises(EtcdOutcomeUnknown):
        t.call("/v3/kv/put", {}, write=True)
    assert t.tried == [0]


def test_etcd_unavailable_answers() -> None:
    t = ScriptedTransport({0: "unavailable:etcdserver: no leader"})
    assert t.call("/v3/kv/put", {}, write=True) == OK_BODY  # refused before proposing: safe to move on
    t = ScriptedTransport({0: "unavailable:etcdserver: request timed out"})
    with pytest.raises(EtcdOutcomeUnknown):
        t.call("/v3/kv/put", {}, write=True)
    t = ScriptedTransport({0: "unavailable:etcdserver: request timed out"})
    assert t.call("/v3/kv/range", {}, write=False) == OK_BODY


def test_all_endpoints_down_is_unavailable_not_unknown() -> None:
    t = ScriptedTransport({0: "refused", 1: "refused", 2: "refused"})
    with pytest.raises(EtcdUnavailable) as info:
        t.call("/v3/kv/put", {}, write=True)
    assert not isinstance(info.value, EtcdOutcomeUnknown)
    assert "127.0.0.1:3" in str(info.value)


def test_endpoints_must_be_urls() -> None:
    with pytest.raises(ValueError):
        Transport(["127.0.0.1:2379"], 1.0, None)
    with pytest.raises(ValueError):
        Transport([], 1.0, None)
