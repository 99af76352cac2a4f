"""Shared cases of the RocketMQ 5 protocol's unit tests: a captured official
header, an ACL with one account, a message and a route."""

from __future__ import annotations

import datetime
from pathlib import Path

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.route import BrokerEndpoint, GroupRoute, TopicRoute
from core.security.acl import AclFile

# captured from rocketmq-python-client 5.1.2 (Credentials("myak", "mysk")), issue 18's research
CAPTURED = [
    ("x-mq-date-time", "20261126T062131Z"),
    (
        "authorization",
        "MQv2-HMAC-SHA1 Credential=myak, SignedHeaders=x-mq-date-time, "
        "Signature=5dd8af68ee68771fea1c81f8252f6f851488fd5c",
    ),
]
CAPTURED_MS = int(datetime.datetime(2026, 11, 26, 6, 21, 31, tzinfo=datetime.UTC).timestamp() * 1000)
SECRET = "app-secret-0123456789"


def _acl(tmp_path: Path, anonymous: str = "") -> AclFile:
    f = tmp_path / "acl.toml"
    f.write_text(
        f'[[account]]\naccess_key = "app"\nsecret_key = "{SECRET}"\npublish = ["orders"]\n'
        f'groups = ["billing"]\n{anonymous}'
    )
    f.chmod(0o600)
    return AclFile(f, 0)


def _msg(body: bytes = b"hello", **sp: object) -> d.Message:
    m = d.Message(topic=d.Resource(name="orders"), body=body)
    m.system_properties.message_id = "0102FC0000000121C90B1969EB00000000"
    m.system_properties.message_type = d.NORMAL
    m.system_properties.body_encoding = d.IDENTITY
    m.system_properties.born_timestamp.seconds = 1_795_674_091
    m.system_properties.born_host = "192.0.2.2"
    for k, v in sp.items():
        if k == "keys":
            m.system_properties.keys.extend(v)  # type: ignore[arg-type]
        else:
            setattr(m.system_properties, k, v)
    return m


def _route(*groups: tuple[str, int, bool]) -> TopicRoute:
    out = []
    for name, queues, live in groups:
        master = (BrokerEndpoint(0, f"10.0.0.1:{len(out) + 1}", "master", 1, live),)
        out.append(GroupRoute(name, "c", queues, queues, "rw", master))
    return TopicRoute("orders", tuple(out))
