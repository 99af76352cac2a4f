"""Accounts and what they may do: the ACL file, reloaded without a restart.

    [[account]]
    access_key = "orders-app"
    secret_key = "..."            # this file is readable by its owner only
    publish = ["orders", "audit.*"]
    subscribe = ["orders"]
    groups = ["billing"]

    [[account]]
    access_key = "ops"
    secret_key = "..."
    admin = true                  # everything, topic creation included

    [anonymous]                   # optional; used only with auth.allow_anonymous
    subscribe = ["public.*"]
    groups = ["*"]

A pattern is a name, `prefix*`, or `*`. A group's retry and dead-letter
topics (`%RETRY%G`, `%DLQ%G`) are readable by whoever may use group G.
`AclFile` re-reads the file when it changes (checked at most once a second,
clock passed in); a change that does not parse, or a file others may read,
is refused with an error in the log and the previous ACL stays in force.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.retry import DLQ_PREFIX, RETRY_PREFIX
from core.security.tls import check_private

log = logging.getLogger(__name__)
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
RECHECK_MS = 1000


def _matches(patterns: tuple[str, ...], name: str) -> bool:
    return any(p in ("*", name) or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def _group_of(topic: str) -> str | None:
    """The group whose retry or dead-letter topic this is (None: neither)."""
    for prefix in (RETRY_PREFIX, DLQ_PREFIX):
        if topic.startswith(prefix) and len(topic) > len(prefix):
            return topic[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class Permissions:
    admin: bool = False
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def may_publish(self, topic: str) -> bool:
        return self.admin or _matches(self.publish, topic)

    def may_use_group(self, group: str) -> bool:
        return self.admin or _matches(self.groups, group)

    def may_subscribe(self, topic: str, group: str | None = None) -> bool:
        """Read `topic` (as `group`, when given): a group's own retry and DLQ
        topics go with the group."""
        if self.admin:
            return True
        if group is not None and not self.may_use_group(group):
            return False
        owner = _group_of(topic)
        if owner is not None:
            return self.may_use_group(owner)
        return _matches(self.subscribe, topic)

    def may_describe(self, topic: str) -> bool:
        return self.may_publish(topic) or self.may_subscribe(topic)


@dataclass(frozen=True)
class Acl:
    secrets: Mapping[str, str] = field(default_factory=dict)
    permissions: Mapping[str, Permissions] = field(default_factory=dict)
    anonymous: Permissions | None = None

    def secret_of(self, access_key: str) -> str | None:
        return self.secrets.get(access_key)


def _patterns(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in value):
        raise ConfigError(f"{where}.{key}", "must be a list of names or patterns (`name`, `prefix*`, `*`)")
    return tuple(value)


def _permissions(table: Mapping[str, Any], where: str) -> Permissions:
    unknown = set(table) - {"access_key", "secret_key", "admin", "publish", "subscribe", "groups"}
    if unknown:
        raise ConfigError(where, f"unknown key(s) {sorted(unknown)}")
    admin = table.get("admin", False)
    if not isinstance(admin, bool):
        raise ConfigError(f"{where}.admin", "must be true or false")
    return Permissions(admin, *(_patterns(table, k, where) for k in ("publish", "subscribe", "groups")))


def parse_acl(text: str, source: str = "ACL") -> Acl:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    unknown = set(data) - {"account", "anonymous"}
    if unknown:
        raise ConfigError(source, f"unknown section(s) {sorted(unknown)}")
    secrets: dict[str, str] = {}
    perms: dict[str, Permissions] = {}
    for i, entry in enumerate(data.get("account", [])):
        where = f"{source}: account[{i}]"
        ak, sk = entry.get("access_key"), entry.get("secret_key")
        if not isinstance(ak, str) or not _KEY.fullmatch(ak):
            raise ConfigError(f"{where}.access_key", "must match [A-Za-z0-9_.-]{1,128}")
        if not isinstance(sk, str) or len(sk) < 16:
            raise ConfigError(f"{where}.secret_key", "must be a string of at least 16 characters")
        if ak in secrets:
            raise ConfigError(f"{where}.access_key", f"{ak!r} appears twice")
        secrets[ak] = sk
        perms[ak] = _permissions(entry, where)
    anon = data.get("anonymous")
    return Acl(secrets, perms, _permissions(anon, f"{source}: anonymous") if anon is not None else None)


def load_acl(path: Path) -> Acl:
    check_private(str(path), "auth.acl_file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("auth.acl_file", f"cannot read {path}: {exc.strerror}") from exc
    return parse_acl(text, str(path))


class AclFile:
    """The ACL in force, re-read when the file changes. `current(now_ms)`
    is cheap: a stat at most every `RECHECK_MS`."""

    def __init__(self, path: Path, now_ms: int) -> None:
        self.path = path
        self._acl = load_acl(path)  # a bad file at start is a config error
        self._stamp = self._stat()
        self._checked = now_ms
        self.reloads = 0

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self, now_ms: int) -> Acl:
        if now_ms - self._checked >= RECHECK_MS:
            self._checked = now_ms
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._acl = load_acl(self.path)
                    self.reloads += 1
                    log.info("reloaded the ACL from %s: %d account(s)", self.path, len(self._acl.secrets))
                except ConfigError as exc:
                    log.error("the changed ACL file is refused, the previous one stays in force: %s", exc)
        return self._acl
