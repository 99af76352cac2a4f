"""Accounts and what they may do: the ACL file, reloaded without a restart.

    [[account]]
    access_key = "orders-app"
    secret_key = "..."            # this file is readable by its owner only
    publish = ["orders", "audit.*"]
    subscribe = ["orders"]
    groups = ["billing"]
    create = ["audit.*"]          # topics it may create, explicitly or by sending (auto-create)

    [[account]]
    access_key = "rmq-proxy"
    secret_key = "..."
    publish = ["*"]
    subscribe = ["*"]
    groups = ["*"]
    proxy = true                  # takes orphan checks (PollOrphanTransactions): any topic's halves

    [[account]]
    access_key = "ops"
    secret_key = "..."
    admin = true                  # everything, topic creation included

    [[account]]
    access_key = "console"
    secret_key = "..."
    monitor = true                # reads an operator watches, nothing else: every group's
                                  # offsets, members and lag (DescribeGroups) and every topic's
                                  # queue offsets; no message bodies, no resets, no deletes

    [anonymous]                   # optional; used only with auth.allow_anonymous
    subscribe = ["public.*"]
    groups = ["public-readers"]

A pattern is a name, `prefix*`, or `*`; patterns never match the broker's
own names (those starting with `%`: `%SCHEDULER%`, `%SCHEDULE%`, retry and
dead-letter topics), which only an exact name or admin grants. A group's
retry topic `%RETRY%G` goes with group G (its consumers read it); its
dead-letter topic `%DLQ%G` holds messages of every topic G read, so reading
it takes an exact grant (`subscribe = ["%DLQ%G"]`) or admin.
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
from core.retry import RETRY_PREFIX
from core.security.tls import check_private

log = logging.getLogger(__name__)
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
RECHECK_MS = 1000


def _matches(patterns: tuple[str, ...], name: str) -> bool:
    if name.startswith("%"):  # the broker's own names: only granted by name
        return name in patterns
    return any(p in ("*", name) or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def _retry_group(topic: str) -> str | None:
    """The group whose retry topic this is (None: not one)."""
    if topic.startswith(RETRY_PREFIX) and len(topic) > len(RETRY_PREFIX):
        return topic[len(RETRY_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class Permissions:
    admin: bool = False
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    create: tuple[str, ...] = ()
    proxy: bool = False  # a RocketMQ proxy's: orphan checks (every topic's uncommitted bodies)
    monitor: bool = False  # a console's or dashboard's: every group's and topic's offsets, read only

    def may_monitor(self) -> bool:
        """Read the cluster's bookkeeping (offsets, members, lag), never its
        messages and never a write: admin or monitor."""
        return self.admin or self.monitor

    def may_create(self, topic: str) -> bool:
        return self.admin or _matches(self.create, topic)

    def may_publish(self, topic: str) -> bool:
        return self.admin or _matches(self.publish, topic)

    def may_use_group(self, group: str) -> bool:
        return self.admin or _matches(self.groups, group)

    def may_subscribe(self, topic: str, group: str | None = None) -> bool:
        """Read `topic` (as `group`, when given): a group's retry topic goes
        with the group; everything else, the dead-letter topics included,
        by the subscribe patterns."""
        if self.admin:
            return True
        if group is not None and not self.may_use_group(group):
            return False
        owner = _retry_group(topic)
        if owner is not None:
            return self.may_use_group(owner)
        return _matches(self.subscribe, topic)

    def may_describe(self, topic: str) -> bool:
        """See a topic's queue offsets (counts, no bodies)."""
        return self.may_monitor() or self.may_publish(topic) or self.may_subscribe(topic)


@dataclass(frozen=True)
class Acl:
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
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
    known = {
        "access_key",
        "secret_key",
        "admin",
        "publish",
        "subscribe",
        "groups",
        "create",
        "proxy",
        "monitor",
    }
    unknown = set(table) - known
    if unknown:
        raise ConfigError(where, f"unknown key(s) {sorted(unknown)}")
    flags = {k: table.get(k, False) for k in ("admin", "proxy", "monitor")}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}", "must be true or false")
    patterns = {k: _patterns(table, k, where) for k in ("publish", "subscribe", "groups", "create")}
    return Permissions(admin=flags["admin"], proxy=flags["proxy"], monitor=flags["monitor"], **patterns)


def parse_acl(text: str, source: str = "ACL") -> Acl:
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # (nesting deeper than the parser recurses)
        raise ConfigError(source, f"not valid TOML: {str(exc)[:200]}") from exc
    unknown = set(data) - {"account", "anonymous"}
    if unknown:
        raise ConfigError(source, f"unknown section(s) {sorted(unknown)}")
    accounts = data.get("account", [])
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        raise ConfigError(f"{source}: account", "must be [[account]] tables")
    anon = data.get("anonymous")
    if anon is not None and not isinstance(anon, dict):
        raise ConfigError(f"{source}: anonymous", "must be an [anonymous] table")
    secrets: dict[str, str] = {}
    perms: dict[str, Permissions] = {}
    for i, entry in enumerate(accounts):
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
    return Acl(secrets, perms, _permissions(anon, f"{source}: anonymous") if anon is not None else None)


def load_acl(path: Path) -> Acl:
    check_private(str(path), "auth.acl_file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("auth.acl_file", f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("auth.acl_file", f"{path} is not UTF-8 text: {exc.reason}") from exc
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
        self.refused = ""  # why the file on disk is not the ACL in force ("": it is)

    def _stat(self) -> tuple[int, ...]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0,)
        # ctime and mode too: a chmod that makes a refused file acceptable is a change
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode)

    def current(self, now_ms: int) -> Acl:
        if now_ms - self._checked >= RECHECK_MS:
            self._checked = now_ms
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._acl = load_acl(self.path)
                    self._stamp = stamp  # only once loaded: a refused file is tried again next time
                    self.reloads += 1
                    self.refused = ""
                    log.info("reloaded the ACL from %s: %d account(s)", self.path, len(self._acl.secrets))
                except ConfigError as exc:
                    if str(exc) != self.refused:  # said once per problem, tried every second
                        log.error("the changed ACL file is refused, the previous one stays in force: %s", exc)
                    self.refused = str(exc)
        return self._acl
