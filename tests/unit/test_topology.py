"""Topology files: groups, hosts and their exec prefixes, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from deploy.topology import load_topology, resolve_topology

pytestmark = pytest.mark.unit


def test_shipped_topologies_load() -> None:
    one = load_topology(resolve_topology("local-1m-2s"))
    assert [(g.name, g.replication, g.slaves) for g in one.groups] == [("broker-a", "sync", 2)]
    two = load_topology(resolve_topology("local-2g"))
    assert len(two.nameservers) == 2 and [g.slaves for g in two.groups] == [1, 1]


def test_hosts_give_exec_prefixes_and_listen_addresses(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text(
        '[hosts.h1]\nexec_prefix = ["ip", "netns", "exec", "h1"]\nlisten_host = "10.9.0.1"\n'
        '[[nameserver]]\nname = "ns"\nhost = "h1"\n'
        '[[group]]\nname = "g"\nslaves = 1\nslave_hosts = ["h1"]\n'
    )
    t = load_topology(f)
    assert t.nameservers == [("ns", "h1")]
    assert t.hosts["h1"].exec_prefix == ["ip", "netns", "exec", "h1"]
    assert t.hosts["h1"].listen_host == "10.9.0.1"
    assert t.groups[0].host == "local" and t.groups[0].slave_hosts == ["h1"]


@pytest.mark.parametrize(
    "text,key",
    [
        ('[[group]]\nname = "g"\n', "nameserver"),
        ('[[nameserver]]\nname = "n"\n', "group"),
        ('[[nameserver]]\nname = "n"\nhost = "nowhere"\n[[group]]\nname = "g"\n', "n.host"),
        ('[[nameserver]]\nname = "n"\n[[group]]\nname = "g"\nreplication = "maybe"\n', "group.g.replication"),
        ('[[nameserver]]\nname = "n"\n[[group]]\nname = "g"\nslaves = 99\n', "group.g.slaves"),
        ("not toml [", "--topology"),
    ],
)
def test_bad_topologies_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_topology(f)
    assert exc.value.key == key


def test_unknown_topology_name() -> None:
    with pytest.raises(ConfigError, match="no topology"):
        resolve_topology("no-such-topology")
