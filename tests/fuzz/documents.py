"""Hypothesis strategies for the text files Tailrace reads: JSON side files
and TOML config files. Each strategy mixes plain noise (bytes, text), values
of the right shape with fields of random types, valid files cut short, and
nesting deeper than the parsers recurse."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

# ---- values -------------------------------------------------------------------

ints = st.one_of(
    st.integers(-3, 70_000),
    st.sampled_from([-1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63)]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(),  # nan and infinities too: json.loads and tomllib read both
    st.text(max_size=12),
    st.sampled_from(["", "a", "t", "g", "127.0.0.1:1", "..", "__sys", "%RETRY%g", "x" * 300, "a/b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def deep(n: int) -> st.SearchStrategy[str]:
    """Nesting `n` deep: more than a recursive parser can follow."""
    return st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])


def cut(text: str) -> st.SearchStrategy[str]:
    """`text` cut anywhere (a file a crash or a full disk left short)."""
    return st.integers(0, max(0, len(text) - 1)).map(lambda i: text[:i])


def noise(shaped: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """File contents: bytes, text, `shaped` documents, cut or whole."""
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        shaped.map(str.encode),
        shaped.flatmap(cut).map(str.encode),
        deep(2000).map(str.encode),
        st.binary(min_size=1, max_size=8).map(lambda b: b"\xff\xfe" + b),  # not UTF-8
    )


# ---- JSON side files -----------------------------------------------------------


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` seven times in eight, else `odd`: a document with one odd part
    gets past the checks of its other parts."""
    return st.integers(0, 7).flatmap(lambda i: odd if i == 0 else good)


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `good`, sometimes any value."""
    return mostly(good, values)


def as_json(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return strategy.map(lambda v: json.dumps(v, allow_nan=True))


names = mostly(
    st.sampled_from(["t", "orders", "%DLQ%g", "g", "a.b-c_d"]),
    st.one_of(st.sampled_from(["", ".", "__x", "a" * 300]), st.text(max_size=10)),
)
qids = mostly(
    st.sampled_from(["0", "1", "7", "65535"]),
    st.one_of(st.sampled_from(["-1", "x", "", "٣"]), st.text(max_size=4)),
)
small = mostly(st.integers(0, 1000), ints)
topics_json = as_json(
    st.fixed_dictionaries(
        {
            "topics": maybe(
                st.dictionaries(names, maybe(st.fixed_dictionaries({"queues": maybe(small)})), max_size=4)
            )
        }
    )
)
offsets_json = as_json(
    st.fixed_dictionaries(
        {
            "offsets": maybe(
                st.dictionaries(
                    names,
                    maybe(st.dictionaries(names, maybe(st.dictionaries(qids, maybe(small))))),
                    max_size=3,
                )
            )
        }
    )
)
epochs_json = as_json(
    st.fixed_dictionaries(
        {"epochs": maybe(st.lists(maybe(st.lists(maybe(small), min_size=2, max_size=2)), max_size=4))}
    )
)
controller_json = as_json(
    st.fixed_dictionaries(
        {
            "groups": maybe(
                st.dictionaries(
                    names,
                    maybe(
                        st.fixed_dictionaries(
                            {
                                "epoch": maybe(small),
                                "master_id": maybe(small),
                                "master_address": maybe(st.text(max_size=20)),
                                "in_sync": maybe(st.lists(maybe(small), max_size=4)),
                            },
                        )
                    ),
                    max_size=3,
                )
            )
        }
    )
)
marker_json = as_json(st.fixed_dictionaries({}, optional={"end_offset": maybe(st.one_of(ints, st.floats()))}))


# ---- TOML config files ---------------------------------------------------------


def toml_value(v: Any) -> str:
    """`v` as an inline TOML value (None, which TOML lacks, as a string)."""
    if v is None:
        return '"null"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(doc: Mapping[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


def tables(keys: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of `keys` (their values mostly of the right kind)
    and sometimes a key nobody knows."""
    return st.fixed_dictionaries(
        {}, optional={**{k: maybe(v) for k, v in keys.items()}, "unknown_key": values}
    )


def toml_files(keys: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    return noise(tables(keys).map(toml_doc))


text_list = st.lists(st.text(max_size=10), max_size=3)
acl_account = tables(
    {
        "access_key": st.sampled_from(["app", "a" * 129, "", "a b"]),
        "secret_key": st.sampled_from(["0123456789abcdef", "short"]),
        "admin": st.booleans(),
        "publish": text_list,
        "subscribe": text_list,
        "groups": text_list,
        "create": text_list,
    }
)
ACL = {"account": st.lists(acl_account, max_size=3), "anonymous": acl_account}
PROFILE = {
    "namesrv": st.lists(st.sampled_from(["127.0.0.1:9876", "host", ":", "a:b"]), max_size=3),
    "ca_file": st.sampled_from(["", "ca.pem", "missing.pem"]),
    "access_key": st.sampled_from(["", "app", "a b"]),
    "secret_key": st.sampled_from(["", "0123456789abcdef"]),
    "server_name": st.text(max_size=10),
}
host = tables({"exec_prefix": text_list, "listen_host": st.text(max_size=10)})
TOPOLOGY = {
    "cluster": tables(
        {
            "name": st.text(max_size=8),
            "secret": st.text(max_size=8),
            "segment_bytes": ints,
            "failover": st.booleans(),
            "lease_ms": ints,
            "controller_heartbeat_ms": ints,
            "heartbeat_ms": ints,
        }
    ),
    "hosts": st.dictionaries(st.sampled_from(["local", "h1"]), host, max_size=2),
    "nameserver": st.lists(
        tables({"name": st.text(max_size=5), "host": st.sampled_from(["local", "h1", "h2"])}), max_size=2
    ),
    "group": st.lists(
        tables(
            {
                "name": st.text(max_size=5),
                "replication": st.sampled_from(["async", "sync", "x"]),
                "slaves": ints,
                "set": st.dictionaries(st.sampled_from(["store.flush", "x"]), scalars, max_size=2),
                "host": st.sampled_from(["local", "h1", "h2"]),
                "slave_hosts": st.lists(st.sampled_from(["local", "h1", "h2"]), max_size=2),
            }
        ),
        max_size=2,
    ),
}
