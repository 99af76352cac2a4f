"""Transactional messages as plain logic: the half records, their transaction
ids, and the table of open halves (time passed in).

A transactional send is stored as a *half*: a record of the transaction
queue (`%TRANS%` queue 0), its real topic and queue in properties, invisible
to every consumer of the real topic. What becomes of it is recorded in the
same queue, after it, as *op* records (property `TXN_OP`, the half's queue
offset in `TXN_HALF`): `commit` (the message was stored in its real topic),
`rollback` (by the producer), `check` (an orphan check was offered: its
count), `discard` (rolled back after `max_checks` checks). So the queue,
read in order from the oldest open half, is the whole state: `TxnTable`
is what that read yields, on the master that leads, rebuilt by each new
mastership (a restart, a promoted slave) from group `%TXN%`'s committed
offset on the queue (`low`: at or below the oldest open half).

A transaction id names (broker group, the half's queue offset, the half's
nonce) with an HMAC keyed like receipt handles (the broker group's key):
the master and its slaves check each other's, another group's or an
altered one is refused before any read, and the nonce (random, stored in
the half) keeps an id from naming a half a failover put at the same offset.

    t1.<base64url(broker|offset|nonce)>.<base64url(mac)>
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from core import tokens
from core.errors import BrokerBusyError, InvalidArgumentError, InvalidTransactionError
from core.record import Message, Record
from core.retry import REAL_TOPIC
from core.timer import REAL_QID

TXN_TOPIC = "%TRANS%"
TXN_GROUP = "%TXN%"  # its committed offset on the queue: `low`, where a rebuild starts
TXN_QUEUE = 0
TRAN_MSG = "TRAN_MSG"  # RocketMQ's: "true" on a send makes it a half
PRODUCER_GROUP = "PGROUP"  # RocketMQ's: the producer group (optional)
NONCE = "TXN_NONCE"
OP = "TXN_OP"
HALF = "TXN_HALF"
CHECKS = "TXN_CHECKS"
MISSES = "TXN_MISSES"
# the broker's own properties of the transaction queue: no client send may carry one
RESERVED = frozenset({NONCE, OP, HALF, CHECKS, MISSES})
# a half's, never a committed message's (RocketMQ's EndTransactionProcessor clears TRAN_MSG too: a
# consumer re-publishing what it received must not store a half)
BOOKKEEPING = frozenset({REAL_TOPIC, REAL_QID, TRAN_MSG, PRODUCER_GROUP, *RESERVED})
PREFIX = "t1"
MAC_BYTES = tokens.MAC_BYTES
MAX_ID = 512
RECENT_FACTOR = 2  # closed outcomes remembered (for repeated ends): this many times max_open


class Outcome(Enum):
    COMMIT = "commit"
    ROLLBACK = "rollback"
    DISCARD = "discard"  # rolled back by the broker after its last check


class Verdict(Enum):
    """What an EndTransaction does, decided from the table."""

    STORE = "store"  # open: carry the outcome out
    REPEAT = "repeat"  # ended before with this outcome: nothing more to do
    CONFLICT = "conflict"  # ended before the other way: refused, nothing done
    UNKNOWN = "unknown"  # no such open half (forgotten, or never): refused


@dataclass(frozen=True, slots=True)
class TxnId:
    broker: str
    offset: int
    nonce: str


def txn_key(cluster_secret: str, broker_name: str) -> bytes:
    return tokens.derive_key(b"tailrace-transaction-id", cluster_secret, broker_name)


def new_nonce() -> str:
    return secrets.token_hex(8)


def encode_id(key: bytes, t: TxnId) -> str:
    return tokens.seal(key, PREFIX, f"{t.broker}|{t.offset}|{t.nonce}".encode())


def _parts(text: str) -> tuple[bytes, bytes]:
    split = tokens.split(PREFIX, text, MAX_ID)
    if split is None:
        raise InvalidTransactionError("not a transaction id of this cluster")
    return split


def decode_id(key: bytes, text: str) -> TxnId:
    """The half an id names; InvalidTransactionError when it is malformed,
    altered, forged or another broker group's."""
    body, mac = _parts(text)
    if not tokens.verified(key, body, mac):
        raise InvalidTransactionError(
            "the transaction id was not issued by this broker group (or was altered)"
        )
    try:
        broker, offset, nonce = body.decode().split("|")
        return TxnId(broker, int(offset), nonce)
    except ValueError:
        raise InvalidTransactionError("the transaction id is malformed") from None


def broker_of(text: str) -> str:
    """The broker group an id names (clear text before its MAC), to route an
    EndTransaction to that group's master, which checks the MAC."""
    body, _ = _parts(text)
    try:
        broker = body.decode().split("|")[0]
    except UnicodeError:
        broker = ""
    if not broker:
        raise InvalidTransactionError("not a transaction id of this cluster")
    return broker


def is_transactional(messages: Sequence[Message]) -> bool:
    """Whether a send is a transactional one (all or none of its messages)."""
    marked = [(m.properties or {}).get(TRAN_MSG, "").lower() == "true" for m in messages]
    if any(marked) and not all(marked):
        raise InvalidArgumentError("a batch is transactional (TRAN_MSG=true) in all its messages or in none")
    return bool(marked) and all(marked)


def check_client_properties(messages: Sequence[Message]) -> None:
    """Refuse a client's send whose properties name the broker's own (RESERVED):
    ops are the master's records, never a client's."""
    for m in messages:
        if m.properties and not RESERVED.isdisjoint(m.properties):
            names = sorted(RESERVED.intersection(m.properties))
            raise InvalidArgumentError(
                f"properties {', '.join(names)} are the broker's (transactions); nothing stored"
            )


def to_half(m: Message, topic: str, queue_id: int, nonce: str) -> Message:
    """The half record of `m`: the client's properties (never an op's: those
    RESERVED are dropped) and the broker's bookkeeping."""
    props = {k: v for k, v in (m.properties or {}).items() if k not in RESERVED}
    props[REAL_TOPIC], props[REAL_QID], props[NONCE] = topic, str(queue_id), nonce
    props[TRAN_MSG] = "true"
    return Message(TXN_TOPIC, TXN_QUEUE, m.body, m.tags, m.keys, props, m.flags, m.born_ms)


def from_half(rec: Record) -> Message:
    """The message a committed half is stored as in its real topic: body,
    tags, keys, flags, born time and properties (the half's bookkeeping
    dropped, TRAN_MSG included, as RocketMQ's EndTransactionProcessor does)."""
    props = {k: v for k, v in rec.properties.items() if k not in BOOKKEEPING}
    qid = rec.properties.get(REAL_QID, "")
    return Message(
        rec.properties.get(REAL_TOPIC, ""),
        int(qid) if qid.isdigit() else -1,
        rec.body,
        rec.tags,
        rec.keys,
        props,
        rec.flags,
        rec.born_ms,
    )


def op_message(kind: str, half: int, checks: int = 0, misses: int = 0) -> Message:
    props = {OP: kind, HALF: str(half)}
    if checks:
        props[CHECKS] = str(checks)
    if misses:
        props[MISSES] = str(misses)
    return Message(TXN_TOPIC, TXN_QUEUE, b"op", properties=props)


@dataclass(slots=True)
class Half:
    offset: int  # its queue offset in the transaction queue
    topic: str
    queue_id: int
    group: str
    nonce: str
    stored_ms: int
    checks: int = 0  # checks delivered to a producer (durable: `check` ops)
    next_check_ms: int = 0
    misses: int = 0  # intervals it was due with no producer taking its check (durable: `miss` ops)
    lease_until: int = 0  # handed out (0: not since it was due): no other poller takes it until then
    delivered: bool = False  # reported delivered: its `check` op is to be appended


@dataclass(frozen=True, slots=True)
class Due:
    half: Half
    discard: bool  # past its last check (or miss): roll it back; else record a miss


class TxnTable:
    """The open halves, from the transaction queue read in order (`apply`),
    with the decisions made from them: what an EndTransaction does
    (`verdict`), which halves are orphans now (`due`), whether a send fits
    (`room`). Time is passed in (wall ms: half deadlines outlive processes)."""

    def __init__(self, check_after_ms: int, check_interval_ms: int, max_checks: int, max_open: int) -> None:
        self.check_after_ms = check_after_ms
        self.check_interval_ms = check_interval_ms
        self.max_checks = max_checks
        self.max_open = max_open
        self.open: dict[int, Half] = {}
        self.loaded = 0  # the next queue offset to read
        self._recent: OrderedDict[int, Outcome] = OrderedDict()  # closed halves' outcomes
        self._recent_cap = max(1, RECENT_FACTOR * max_open)

    # ---- what the queue says ----------------------------------------------------------

    def start_at(self, offset: int) -> None:
        self.loaded = max(self.loaded, offset)

    def apply(self, offset: int, props: Mapping[str, str], store_ms: int) -> None:
        """One record of the queue, in order: a half opens, an op updates or
        closes the half it names (an op of a half below where the read began
        names one closed long ago: nothing to do). Every record a client's
        send put here is a half (`to_half` sets TRAN_MSG, and the leader
        takes no client send into `%TRANS%`), so a record with TRAN_MSG is
        never read as an op, whatever else it carries: only the master's own
        ops (which carry no TRAN_MSG) end or count a half."""
        self.loaded = max(self.loaded, offset + 1)
        if props.get(TRAN_MSG) == "true":  # a half (ops never carry it: what a client sent is a half)
            qid = props.get(REAL_QID, "")
            self.open[offset] = Half(
                offset,
                props.get(REAL_TOPIC, ""),
                int(qid) if qid.isdigit() else -1,
                props.get(PRODUCER_GROUP, ""),
                props.get(NONCE, ""),
                store_ms,
                0,
                store_ms + self.check_after_ms,
            )
            return
        kind = props.get(OP)
        if kind is None:
            return
        raw = props.get(HALF, "")
        if not raw.isdigit():
            return
        half = int(raw)
        if kind in ("check", "miss"):
            h = self.open.get(half)
            n = props.get(CHECKS if kind == "check" else MISSES, "")
            if h is None or not n.isdigit():
                return
            if kind == "check":
                h.checks = max(h.checks, int(n))
                h.next_check_ms = max(h.next_check_ms, store_ms + self.check_interval_ms)
            else:
                h.misses = max(h.misses, int(n))
                h.next_check_ms = max(h.next_check_ms, store_ms)
            return
        try:
            self.close(half, Outcome(kind))
        except ValueError:
            return

    def close(self, offset: int, outcome: Outcome) -> None:
        """Closed now (its op appended or about to be): a repeated end is answered from here."""
        self.open.pop(offset, None)
        self._recent[offset] = outcome
        self._recent.move_to_end(offset)
        while len(self._recent) > self._recent_cap:
            self._recent.popitem(last=False)

    # ---- decisions --------------------------------------------------------------------

    def low(self) -> int:
        """Where a rebuild must start reading: the oldest open half, or the read's end."""
        return min(self.open, default=self.loaded)

    def room(self, adding: int) -> None:
        if len(self.open) + adding > self.max_open:
            raise BrokerBusyError(
                f"{len(self.open)} transactions are open: at most broker.transaction_max_open "
                f"({self.max_open}); nothing stored, try again once some end"
            )

    def verdict(self, t: TxnId, outcome: Outcome) -> tuple[Verdict, Outcome | None]:
        """What ending `t` with `outcome` does, and the outcome recorded before (if any)."""
        h = self.open.get(t.offset)
        if h is not None:
            if h.nonce != t.nonce:
                return Verdict.UNKNOWN, None
            return Verdict.STORE, None
        before = self._recent.get(t.offset)
        if before is None:
            return Verdict.UNKNOWN, None
        same = before is outcome or (outcome is Outcome.ROLLBACK and before is Outcome.DISCARD)
        return (Verdict.REPEAT if same else Verdict.CONFLICT), before

    def spent(self, h: Half) -> bool:
        """Asked `max_checks` times, or missed as often: the next due time discards it."""
        return h.checks >= self.max_checks or h.misses >= self.max_checks

    def due(self, now_ms: int, limit: int) -> list[Due]:
        """The orphans to act on now, oldest first, at most `limit`: those
        due and spent are discarded; those whose check no poller took (or
        none reported delivered) for a whole interval record a miss."""
        out: list[Due] = []
        for h in sorted(self.open.values(), key=lambda h: h.next_check_ms):
            if h.next_check_ms > now_ms or len(out) >= limit:
                break
            if h.delivered or h.lease_until > now_ms:  # being asked now
                continue
            if self.spent(h):
                out.append(Due(h, True))
            elif h.next_check_ms + self.check_interval_ms <= now_ms:
                out.append(Due(h, False))
        return out

    def ready(self, now_ms: int) -> list[Half]:
        """The checks to hand out now, oldest first: due, not spent, not
        handed out to a poller whose lease runs, not delivered already."""
        out = [
            h
            for h in self.open.values()
            if h.next_check_ms <= now_ms and not h.delivered and h.lease_until <= now_ms and not self.spent(h)
        ]
        return sorted(out, key=lambda h: h.next_check_ms)

    def handed_out(self, h: Half, until_ms: int) -> None:
        h.lease_until = until_ms

    def reported(self, h: Half, delivered: bool) -> bool:
        """A poller's report on a check it was handed: delivered to a
        producer (True: to be counted), or returned (handed out again at
        once). A report of a check not handed out is ignored (False)."""
        if h.delivered or not h.lease_until:
            return False
        if delivered:
            h.delivered = True
        else:
            h.lease_until = 0
        return delivered

    def checked(self, h: Half, now_ms: int) -> None:
        """A check was delivered (its op appended): counted, the next one an interval later."""
        h.checks += 1
        h.next_check_ms = now_ms + self.check_interval_ms
        h.delivered, h.lease_until = False, 0

    def missed(self, h: Half, now_ms: int) -> None:
        """No producer took its check for an interval (its op appended): a miss, still due."""
        h.misses += 1
        h.next_check_ms = now_ms
        h.lease_until = 0


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a poller can deliver: checks of `topics` (empty: any), of halves
    of `groups` or of none (empty: any group), in at most `max_bytes`."""

    topics: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    max_bytes: int = 0  # 0: the server's limit

    def takes(self, h: Half) -> bool:
        return (not self.topics or h.topic in self.topics) and (
            not self.groups or not h.group or h.group in self.groups
        )


ANY = Wanted()


@dataclass(frozen=True, slots=True)
class Orphan:
    """A check to put to a producer of `topic`: the half as it would be committed."""

    transaction_id: str
    message: Message  # its real topic and queue, the producer's fields
    producer_group: str
    checks: int
    physical_offset: int
    store_ms: int

    def size(self) -> int:
        """Its bytes in an answer, about (body, properties, names)."""
        m = self.message
        props = sum(len(k) + len(v) + 4 for k, v in (m.properties or {}).items())
        return len(m.body) + props + len(m.tags) + len(m.keys) + len(m.topic) + 256


@dataclass(frozen=True, slots=True)
class Ended:
    outcome: Outcome
    repeated: bool  # ended before (this outcome, or a discard for a rollback): nothing done now


class TransactionOps(Protocol):
    """The leader's transactions (master/transactions.py), as the broker service calls them."""

    def end(self, topic: str, transaction_id: str, outcome: Outcome) -> Ended: ...

    def poll(
        self,
        max_count: int,
        wait_ms: int,
        alive: Callable[[], bool] = ...,
        wanted: Wanted = ...,
        delivered: Sequence[str] = (),
        returned: Sequence[str] = (),
    ) -> list[Orphan]: ...
