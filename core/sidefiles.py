"""Side files: the small JSON tables kept beside a log (`topics.json`,
`offsets.json`, `epochs.json`) or by the controller (`controller.json`).

Written whole or not at all (`write_json`: core.fileutil.atomic_write; a
failure is StorageFullError naming the file, and the caller changes nothing
in memory). Read strictly (`read_json`: missing, or parsed by a function
that checks the shape; anything else is `Damage`).

A damaged or missing table is rebuilt from the CommitLog where the log holds
its content: topics, offsets and epochs travel through the log as system
records (core/store/system.py). `needs_rebuild` is the one rule:

- damaged, and the log holds its whole history (it starts at offset 0):
  the damaged file is kept as `<name>.damaged-<ms>` (never deleted) and the
  table is rebuilt from the log;
- damaged, and the log no longer starts at 0 (retention, or a slave that
  started at its master's oldest segment): the rebuild could silently lose
  definitions or commits, so the process refuses to start
  (`DamagedFileError`, exit status 2) naming the file and what to do;
- missing while the log holds records: rebuilt from what the log holds (the
  operator moved a damaged file aside, or a data dir from before the table
  existed), with a warning.

The controller's table has no log behind it: damaged is always
DamagedFileError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.errors import StorageFullError, TailraceError
from core.fileutil import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")
Payloads = list[dict[str, Any]]


class DamagedFileError(TailraceError):
    """A side file cannot be read and cannot be rebuilt: the process must not
    start (deploy/broker_main.py, deploy/nameserver_main.py exit with 2)."""

    code = "DAMAGED_FILE"

    def __init__(self, path: Path, reason: str, advice: str) -> None:
        super().__init__(f"{path} is damaged ({reason}); {advice}")
        self.path = path
        self.reason = reason


class Damage(Exception):
    """Why a side file could not be read (internal: callers decide what follows)."""


def write_json(path: Path, body: Any, indent: int | None = None) -> None:
    """Replace `path` with `body` as JSON; StorageFullError naming the file
    if it cannot be written (the old file is then intact)."""
    try:
        atomic_write(path, json.dumps(body, indent=indent).encode())
    except OSError as exc:
        raise StorageFullError(f"cannot write {path.name}: {exc.strerror or exc}") from exc


def read_json(path: Path, parse: Callable[[Any], T]) -> T | None:
    """`parse(content)`, or None if there is no file. Unreadable bytes, text
    that is not JSON and a shape `parse` rejects (it raises ValueError,
    KeyError, TypeError ...) all raise Damage."""
    with contextlib.suppress(OSError):
        os.unlink(path.with_name(path.name + ".tmp"))  # a write a crash interrupted
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Damage(f"unreadable: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
        raise Damage(f"not JSON: {exc}") from exc
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise Damage(f"not the expected shape: {exc!r}"[:300]) from exc


def need(cond: bool, what: str) -> None:
    """A shape check for `parse` functions."""
    if not cond:
        raise ValueError(what)


def count(value: Any, what: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    """An integer in lo..hi (JSON has no other kind of number we write)."""
    need(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, f"{what}: {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class LogHistory:
    """What a CommitLog can tell a side file: the payloads of its system
    records of one kind, in log order, and whether it still holds them all."""

    start: int  # the log's first offset; 0: no segment was ever deleted
    end: int
    payloads: Callable[[str], Payloads]

    @property
    def complete(self) -> bool:
        return self.start == 0

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def needs_rebuild(path: Path, damage: Damage | None, missing: bool, history: LogHistory, advice: str) -> bool:
    """The module's rule: True to rebuild `path` from `history`; raises
    DamagedFileError (with `advice`) when it is damaged and the log cannot
    replace it."""
    if damage is not None:
        if not history.complete:
            raise DamagedFileError(
                path,
                str(damage),
                f"the log no longer holds all of its history (it starts at offset {history.start}): {advice}",
            )
        keep = path.with_name(f"{path.name}.damaged-{int(time.time() * 1000)}")
        os.replace(path, keep)
        log.warning("%s is damaged (%s): kept as %s and rebuilt from the log", path, damage, keep.name)
        return True
    if missing and not history.empty:
        log.warning(
            "%s is missing: rebuilt from the system records the log holds (from offset %d)",
            path,
            history.start,
        )
        return True
    return False


def load_or_rebuild(
    path: Path,
    parse: Callable[[Any], T],
    history: LogHistory | None,
    advice: str,
    kind: str,
    replay: Callable[[list[dict[str, Any]]], T],
) -> T | None:
    """A side file's content: as read; rebuilt from the log's `kind` system
    records (`replay`) when damaged or missing and `history` allows
    (`needs_rebuild`); None for a missing file and no log to say otherwise.
    Without `history` a damaged file raises DamagedFileError."""
    try:
        found = read_json(path, parse)
    except Damage as exc:
        damage: Damage | None = exc
        found = None
    else:
        damage = None
    if history is None:
        if damage is not None:
            raise DamagedFileError(path, str(damage), advice)
    elif needs_rebuild(path, damage, found is None, history, advice):
        found = replay(history.payloads(kind))
    return found
