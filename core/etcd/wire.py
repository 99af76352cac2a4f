"""The JSON of etcd's gRPC gateway, both ways; pure functions, no sockets.

The gateway speaks protobuf's JSON mapping, with its traps, each handled
here (and each tested on canned JSON in tests/unit/test_etcd_wire.py):

- int64 fields (revisions, versions, lease IDs, TTLs, counts) arrive as JSON
  strings ("revision": "42"): every number goes through `_int`, which takes
  a string or a number;
- fields at their default value are omitted: no `kvs` when a range is
  empty, no `count` or `deleted` when 0, no `succeeded` when a txn failed, no
  `value` for an empty value, no `type` for a PUT event (PUT is 0), no `TTL`
  in a keepalive answer for an expired or unknown lease: every field is read
  with a default (`_int(d, "x")` is 0 when absent);
- keys and values are base64 (`_b64`, `_unb64`);
- errors come as `{"error": ..., "code": N, "message": ...}` with HTTP 200 or
  not; a stream's error as `{"error": {"grpc_code": N, "message": ...}}`:
  `error_of` reads both whatever the HTTP status;
- the streaming calls (keepalive, watch) wrap each answer in `{"result": ...}`.
"""

from __future__ import annotations

import base64
from typing import Any

from core.etcd.errors import UNKNOWN, EtcdError
from core.etcd.model import Compare, KeyValue, Op, RangeResult, TxnResult, WatchEvent, prefix_end

Json = dict[str, Any]

_CMP_RESULT = {"=": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}
_CMP_FIELD = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision", "LEASE": "lease"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) and text else b""


def _int(d: Json, name: str) -> int:
    """An int64 field: a JSON string or number; 0 when omitted."""
    value = d.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EtcdError(UNKNOWN, f"field {name!r} is not a number: {value!r}")
    return int(value)


def _obj(d: Json, name: str) -> Json:
    value = d.get(name) or {}
    if not isinstance(value, dict):
        raise EtcdError(UNKNOWN, f"field {name!r} is not an object: {value!r}")
    return value


def _list(d: Json, name: str) -> list[Json]:
    value = d.get(name) or []
    if not isinstance(value, list):
        raise EtcdError(UNKNOWN, f"field {name!r} is not a list: {value!r}")
    return value


# -- requests ---------------------------------------------------------------


def _range_fields(key: bytes, prefix: bool) -> Json:
    if not prefix:
        return {"key": _b64(key)}
    # the empty prefix (every key) is etcd's key "\0" with range end "\0": an empty key is refused
    return {"key": _b64(key or b"\0"), "range_end": _b64(prefix_end(key))}


def range_request(key: bytes, prefix: bool = False, serializable: bool = False) -> Json:
    body = _range_fields(key, prefix)
    if serializable:
        body["serializable"] = True
    return body


def put_request(key: bytes, value: bytes, lease: int = 0) -> Json:
    body: Json = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return body


def delete_request(key: bytes, prefix: bool = False) -> Json:
    return _range_fields(key, prefix)


def compare_json(c: Compare) -> Json:
    body: Json = {"key": _b64(c.key), "target": c.target, "result": _CMP_RESULT[c.op]}
    if c.target == "VALUE":
        assert isinstance(c.operand, bytes)
        body["value"] = _b64(c.operand)
    else:
        body[_CMP_FIELD[c.target]] = str(c.operand)
    return body


def op_json(op: Op) -> Json:
    if op.kind == "get":
        return {"request_range": range_request(op.key, op.prefix)}
    if op.kind == "put":
        return {"request_put": put_request(op.key, op.value, op.lease)}
    return {"request_delete_range": delete_request(op.key, op.prefix)}


def txn_request(compare: list[Compare], success: list[Op], failure: list[Op]) -> Json:
    return {
        "compare": [compare_json(c) for c in compare],
        "success": [op_json(o) for o in success],
        "failure": [op_json(o) for o in failure],
    }


def lease_grant_request(ttl_s: int) -> Json:
    return {"TTL": str(ttl_s)}


def lease_request(lease_id: int) -> Json:
    return {"ID": str(lease_id)}


def watch_request(key: bytes, start_revision: int = 0, prefix: bool = False) -> Json:
    create = _range_fields(key, prefix)
    if start_revision:
        create["start_revision"] = str(start_revision)
    return {"create_request": create}


# -- answers ----------------------------------------------------------------


def error_of(body: Json) -> EtcdError | None:
    """The error an answer carries, if any (the HTTP status does not say:
    the gateway answers errors with 200 as well as 4xx/5xx)."""
    if "error" not in body:
        return None
    err = body["error"]
    if isinstance(err, dict):  # a stream's error: {"error": {"grpc_code": 14, "message": ...}}
        return EtcdError(_int(err, "grpc_code") or _int(err, "code") or UNKNOWN, str(err.get("message", "")))
    return EtcdError(_int(body, "code") or UNKNOWN, str(body.get("message") or err))


def revision_of(body: Json) -> int:
    return _int(_obj(body, "header"), "revision")


def key_value(d: Json) -> KeyValue:
    return KeyValue(
        key=_unb64(d.get("key")),
        value=_unb64(d.get("value")),
        create_revision=_int(d, "create_revision"),
        mod_revision=_int(d, "mod_revision"),
        version=_int(d, "version"),
        lease=_int(d, "lease"),
    )


def range_result(body: Json) -> RangeResult:
    return RangeResult([key_value(kv) for kv in _list(body, "kvs")], revision_of(body))


def deleted_count(body: Json) -> int:
    return _int(body, "deleted")


def txn_result(body: Json) -> TxnResult:
    revision = revision_of(body)
    responses: list[RangeResult | int | None] = []
    for r in _list(body, "responses"):
        if "response_range" in r:
            rng = _obj(r, "response_range")
            responses.append(RangeResult([key_value(kv) for kv in _list(rng, "kvs")], revision))
        elif "response_delete_range" in r:
            responses.append(deleted_count(_obj(r, "response_delete_range")))
        else:  # response_put (a nested txn is not part of our API)
            responses.append(None)
    return TxnResult(bool(body.get("succeeded", False)), revision, responses)


def lease_granted(body: Json) -> tuple[int, int]:
    return _int(body, "ID"), _int(body, "TTL")


def keepalive_ttl(body: Json) -> int:
    """The remaining TTL a keepalive answered; 0 when the answer has no TTL
    (etcd's answer for an expired or unknown lease, with HTTP 200)."""
    result = _obj(body, "result") if "result" in body else body
    return max(_int(result, "TTL"), 0)


def time_to_live(body: Json) -> int:
    """The remaining TTL (whole seconds, rounded down) from
    /v3/lease/timetolive; -1 for an expired or unknown lease (etcd's answer)."""
    return max(_int(body, "TTL"), -1)


def watch_message(body: Json) -> tuple[bool, list[WatchEvent]]:
    """One message of a watch stream: (created ack?, events). Raises the
    stream's error, or `EtcdError` when etcd canceled the watch (its start
    revision was compacted, for one)."""
    err = error_of(body)
    if err is not None:
        raise err
    result = _obj(body, "result")
    if result.get("canceled"):
        reason = result.get("cancel_reason") or "watch canceled"
        compacted = _int(result, "compact_revision")
        raise EtcdError(11 if compacted else UNKNOWN, f"{reason} (compact_revision {compacted})")
    events = [
        WatchEvent("DELETE" if e.get("type") == "DELETE" else "PUT", key_value(_obj(e, "kv")))
        for e in _list(result, "events")
    ]
    return bool(result.get("created", False)), events


def member_status(body: Json) -> tuple[int, int]:
    """(this member's id, the leader's id; 0 when it knows none) from /v3/maintenance/status."""
    return _int(_obj(body, "header"), "member_id"), _int(body, "leader")
