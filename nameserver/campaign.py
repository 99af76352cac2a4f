"""One controller's campaign for leadership through etcd.

The leader key (nameserver/etcd_store.py) is created only if absent, attached
to a lease of `ttl` seconds; whoever created it leads, its `create_revision`
the fencing token. The campaign is a state machine stepped by one thread
(`step()` returns how long to wait; `run()` loops), time passed in:

- standing by: read the key (linearizable); held by another: follow it (its
  address goes out with NOT_CONTROLLER) and watch it; absent: grant a lease
  and create the key in one transaction (create_revision = 0) that also
  reads the `lease_ms` key: the longest master lease any leader may have
  granted. Then take over: the controller re-reads every group and gives
  every master that longest lease plus a margin. `lease_ms` is raised to
  our own if it was lower, never lowered. A create whose answer was lost:
  the key is read back, ours (our lease) is adopted, else the lease revoked;
- leading: every ttl/3 keep the lease alive and read the key back (someone
  may have deleted or overwritten it by hand: then step down). A keepalive
  sent at `t` and answered lets the controller lead until `t + ttl` on this
  process's monotonic clock; nothing else extends it. So a controller that
  cannot reach etcd stops renewing master leases by the time its etcd lease
  may have expired, however long etcd itself keeps the lease (etcd resets
  every lease to its full TTL when it elects a new etcd leader: a lease lives
  longer than its holder counts, never shorter). A keepalive answered with
  no TTL: the lease expired; step down. Reached again after a lapse, or
  after a save stepped it down: take over again (re-read the store);
- stopping: step down first, then revoke the lease so a standby leads at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable

from core.clock import now_ms
from core.errors import TailraceError
from core.etcd import Compare, EtcdError, EtcdOutcomeUnknown, EtcdUnavailable, Op, RangeResult
from core.etcd.api import Etcd
from nameserver.controller import Controller, LeaderInfo
from nameserver.etcd_store import EtcdStore

log = logging.getLogger(__name__)
RETRY_S = 0.2  # after a failed call to etcd


def leader_value(me: LeaderInfo) -> bytes:
    return json.dumps({"name": me.name, "address": me.address}, sort_keys=True).encode()


def parse_leader(raw: bytes) -> LeaderInfo | None:
    try:
        body = json.loads(raw)
        return LeaderInfo(str(body["name"]), str(body["address"]))
    except (ValueError, KeyError, TypeError):
        return None


class Campaign:
    def __init__(
        self,
        kv: Etcd,
        store: EtcdStore,
        controller: Controller,
        ttl_s: int,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("an etcd lease lasts at least 1 s")
        self.kv = kv
        self.store = store
        self.controller = controller
        self.ttl_s = ttl_s
        self.clock_ms = clock_ms
        self.value = leader_value(controller.me)
        self.lease_id = 0  # ours while we hold (or are taking) the leader key
        self.watch_revision = 0  # standing by: the revision the key was read at
        self.last_error = ""
        self.wait_ms = 0  # the longest master lease a leader may have granted (the lease_ms key)

    # ---- one step ----------------------------------------------------------------------

    def step(self) -> float:
        """Do what the campaign needs now; seconds until the next step."""
        try:
            return self._keep() if self.lease_id else self._stand_by()
        except EtcdUnavailable as exc:
            self._note(f"etcd unreachable: {exc}")
            return RETRY_S
        except (EtcdError, TailraceError) as exc:  # e.g. the store could not be read at take-over
            self._note(str(exc))
            return RETRY_S

    def _stand_by(self) -> float:
        r = self.kv.get(self.store.leader_key)
        if r.kvs:
            self.controller.follow(parse_leader(r.kvs[0].value))
            self.watch_revision = r.revision
            return self.ttl_s / 3
        sent = self.clock_ms()
        lease, ttl = self.kv.lease_grant(self.ttl_s)
        own = self.controller.lease_ms
        try:
            t = self.kv.txn(
                [Compare.create_revision(self.store.leader_key, "=", 0)],
                [Op.get(self.store.lease_key), Op.put(self.store.leader_key, self.value, lease)],
                [Op.get(self.store.leader_key)],
            )
        except EtcdOutcomeUnknown:
            return self._adopt_or_revoke(lease, ttl, sent)
        if not t.succeeded:  # another was quicker
            self._revoke(lease)
            held = t.responses[0] if t.responses else None
            if isinstance(held, RangeResult) and held.kvs:
                self.controller.follow(parse_leader(held.kvs[0].value))
            return 0.0
        before = t.responses[0]
        previous = _int(before.kvs[0].value) if isinstance(before, RangeResult) and before.kvs else 0
        self.wait_ms = max(previous, own)
        if previous < own:  # never lowered: a later leader waits out the longest lease granted
            self.kv.put(self.store.lease_key, str(own).encode())
        return self._lead(lease, ttl, sent, t.revision)

    def _adopt_or_revoke(self, lease: int, ttl: int, sent: int) -> float:
        """The create's answer was lost: if the key is ours (our lease), lead;
        else give the lease back."""
        r = self.kv.get(self.store.leader_key)
        kv = r.kvs[0] if r.kvs else None
        if kv is None or kv.lease != lease or kv.value != self.value:
            self._revoke(lease)
            return 0.0
        previous = _int(self._get(self.store.lease_key))
        self.wait_ms = max(previous, self.controller.lease_ms)
        if previous < self.controller.lease_ms:
            self.kv.put(self.store.lease_key, str(self.controller.lease_ms).encode())
        return self._lead(lease, ttl, sent, kv.create_revision)

    def _lead(self, lease: int, ttl: int, sent: int, token: int) -> float:
        self.lease_id, self.ttl_s = lease, ttl
        self.store.token = (self.value, token)
        log.warning("controller %s took the leader key (token %d)", self.controller.me.name, token)
        if 2 * ttl * 1000 > self.controller.lease_ms:
            log.error(
                "controller %s: etcd granted a %d s lease, more than half of lease_ms %d: a dead leader "
                "may cost the masters their leases (lower etcd's election timeout or raise lease_ms)",
                self.controller.me.name, ttl, self.controller.lease_ms,
            )  # fmt: skip
        self.controller.take_over(self.clock_ms(), sent + ttl * 1000, token, self.wait_ms)
        self.last_error = ""
        return self.ttl_s / 3

    def _keep(self) -> float:
        sent = self.clock_ms()
        left = self.kv.lease_keepalive(self.lease_id)
        if left <= 0:
            self._lose("its etcd lease expired")
            return 0.0
        token = self.store.token[1] if self.store.token is not None else -1
        r = self.kv.get(self.store.leader_key)  # still ours? (deleted or overwritten by hand: not)
        kv = r.kvs[0] if r.kvs else None
        if kv is None or kv.create_revision != token or kv.value != self.value or kv.lease != self.lease_id:
            self._lose(f"the leader key is no longer held with token {token}")
            return 0.0
        if not self.controller.extend(self.clock_ms(), sent + left * 1000):
            # lapsed (etcd was unreachable), or the take-over or a save failed: lead again, re-read
            self.controller.take_over(self.clock_ms(), sent + left * 1000, token, self.wait_ms)
        self.last_error = ""
        return self.ttl_s / 3

    def _get(self, key: bytes) -> bytes:
        r = self.kv.get(key)
        return r.kvs[0].value if r.kvs else b"0"

    def _revoke(self, lease: int) -> None:
        with contextlib.suppress(EtcdError):
            self.kv.lease_revoke(lease)

    def _lose(self, why: str) -> None:
        self.controller.step_down(why)
        self.store.token = None
        lease, self.lease_id = self.lease_id, 0
        self._revoke(lease)

    def _note(self, error: str) -> None:
        if error != self.last_error:
            log.warning("controller %s: %s", self.controller.me.name, error)
            self.last_error = error

    # ---- the thread --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delay = self.step()
                if delay > 0 and not self.lease_id and self.watch_revision:
                    self._wait_for_change(delay, stop)
                elif delay > 0:
                    stop.wait(delay)
            except Exception:  # never die: leadership depends on this loop
                log.exception("controller campaign step failed")
                stop.wait(RETRY_S)

    def _wait_for_change(self, timeout_s: float, stop: threading.Event) -> None:
        """Standing by: until the leader key changes (a watch) or `timeout_s`."""
        started = self.clock_ms()
        try:
            events = self.kv.watch(
                self.store.leader_key, start_revision=self.watch_revision + 1, timeout_s=timeout_s
            )
            try:
                for _ in events:
                    return
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
        except EtcdError:  # unreachable, compacted, refused: read the key again shortly
            pass
        left = timeout_s - (self.clock_ms() - started) / 1000  # a watch that ended early: wait the rest
        if left > 0:
            stop.wait(min(left, RETRY_S))

    def resign(self) -> None:
        """Stop leading at once; the lease revoked lets a standby lead now."""
        if self.lease_id:
            self._lose("stopping")


def _int(raw: bytes) -> int:
    try:
        return max(0, int(raw))
    except ValueError:
        return 0
