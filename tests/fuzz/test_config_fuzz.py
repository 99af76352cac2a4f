"""Fuzzing the TOML files Tailrace reads: the ACL (core/security/acl.py), a
client profile (consumer/profile.py), a cluster topology
(deploy/topology.py) and the broker's and nameserver's config files. For
any bytes, each answers its value or raises ConfigError naming what is
wrong, never another exception."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from consumer.profile import Profile
from core.broker_config import SECTIONS as BROKER_SECTIONS
from core.broker_config import load_broker_config
from core.config import describe
from core.errors import ConfigError
from core.security.acl import load_acl, parse_acl
from deploy import nameserver_main
from deploy.topology import load_topology
from tests.fuzz.documents import ACL, PROFILE, TOPOLOGY, mostly, scalars, tables, toml_doc, toml_files
from tests.fuzz.profiles import examples

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

DEEP_TOML = ("a = " + "[" * 2000 + "]" * 2000).encode()  # deeper than tomllib recurses
NOT_UTF8 = b"a = '\xff'"


@contextmanager
def private_file(content: bytes, name: str = "file.toml") -> Iterator[Path]:
    """`content` in a file only its owner reads (secret files must be)."""
    d = Path(tempfile.mkdtemp(prefix="tailrace-fuzz-"))
    path = d / name
    path.write_bytes(content)
    os.chmod(path, 0o600)
    (d / "ca.pem").write_text("not a certificate\n")
    try:
        yield path
    finally:
        shutil.rmtree(d)


def answers_or_config_error(load: Callable[[], Any]) -> None:
    try:
        load()
    except ConfigError as exc:
        assert exc.key and exc.reason
        event("ConfigError")
    else:
        event("loaded")


@settings(max_examples=examples(1))
@given(toml_files(ACL))
@example(DEEP_TOML)  # was RecursionError
@example(b"account = 1")  # was TypeError
@example(b"account = [1]")  # was AttributeError
@example(b"anonymous = 1")  # was TypeError
@example(NOT_UTF8)  # load_acl: was UnicodeDecodeError
def test_an_acl_loads_or_is_a_config_error(content: bytes) -> None:
    answers_or_config_error(lambda: parse_acl(content.decode("utf-8", "replace")))
    with private_file(content) as path:
        answers_or_config_error(lambda: load_acl(path))


@settings(max_examples=examples(1))
@given(toml_files(PROFILE))
@example(DEEP_TOML)  # was RecursionError
def test_a_profile_loads_or_is_a_config_error(content: bytes) -> None:
    with private_file(content) as path:
        answers_or_config_error(lambda: Profile.load(path))


@settings(max_examples=examples(1))
@given(toml_files(TOPOLOGY))
@example(DEEP_TOML)  # was RecursionError
@example(NOT_UTF8)  # was UnicodeDecodeError
@example(b"nameserver = [1]")  # was TypeError
@example(b'nameserver = [{host = "x"}]')  # was KeyError
@example(b"hosts = {h = 1}")  # was AttributeError
@example(b'nameserver = [{name = "n"}]\ngroup = [{name = "g", set = 1}]')  # was TypeError
@example(b'nameserver = [{name = "n"}]\ngroup = [{name = "g"}]\ncluster = {lease_ms = "x"}')  # ValueError
@example(b'nameserver = [{name = "n"}]\ngroup = [{name = "g"}]\ncluster = 1')  # was AttributeError
def test_a_topology_loads_or_is_a_config_error(content: bytes) -> None:
    with private_file(content) as path:
        answers_or_config_error(lambda: load_topology(path))


def section_keys(sections: dict[str, type[Any]]) -> dict[str, st.SearchStrategy[Any]]:
    """Every documented key, each with values of its default's type or any."""
    out: dict[str, st.SearchStrategy[Any]] = {}
    for name, cls in sections.items():
        keys = {}
        for key, default, _doc in describe(cls):
            same = (
                st.just(str(default) if isinstance(default, Path) else default)
                if default is not None
                else scalars
            )
            keys[key] = mostly(same, scalars)
        out[name] = tables(keys)
    return out


@settings(max_examples=examples(1))
@given(toml_files(section_keys(BROKER_SECTIONS)))
@example(DEEP_TOML)  # was RecursionError
@example(NOT_UTF8)  # was UnicodeDecodeError
def test_a_broker_config_file_loads_or_is_a_config_error(content: bytes) -> None:
    with private_file(content) as path:
        answers_or_config_error(lambda: load_broker_config(path))


@settings(max_examples=examples(1))
@given(toml_files(section_keys(nameserver_main.SECTIONS)))
@example(DEEP_TOML)  # was RecursionError
@example(NOT_UTF8)  # was UnicodeDecodeError
@example(b"server = 1")  # was TypeError
def test_a_nameserver_config_file_loads_or_is_a_config_error(content: bytes) -> None:
    with private_file(content) as path:
        args = argparse.Namespace(config=path, set=[], listen=None, insecure=False)
        answers_or_config_error(lambda: nameserver_main.load(args))


@settings(max_examples=examples(0.5))
@given(st.dictionaries(st.sampled_from(sorted(BROKER_SECTIONS)), scalars, max_size=3).map(toml_doc))
def test_a_section_that_is_not_a_table_is_a_config_error(text: str) -> None:
    with private_file(text.encode()) as path:
        answers_or_config_error(lambda: load_broker_config(path))
