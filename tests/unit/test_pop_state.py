"""The pop state machine (core/pop/state.py) against a model, and receipt
handles (core/pop/handles.py). Every change goes through its record, as on a
master: plan, JSON round trip (as the log stores it), apply; a second table
fed the same records (a slave, or recovery) must agree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgumentError, InvalidReceiptError, QuotaExceededError
from core.pop import snapshot as pop_snapshot
from core.pop.handles import Receipt, decode_handle, encode_handle, handle_key
from core.pop.state import Key, Popped, PopTable

pytestmark = pytest.mark.unit
K: Key = ("G", "T", 0)


def _wire(p: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(p, separators=(",", ":"), sort_keys=True))


class Master:
    """A table and its replica, fed the same records; records kept for replays."""

    def __init__(self, per_queue: int = 10_000, per_group: int = 100_000) -> None:
        self.table = PopTable(per_queue, per_group)
        self.replica = PopTable(per_queue, per_group)
        self.records: list[dict[str, Any]] = []

    def _write(self, p: dict[str, Any]) -> list[Popped]:
        p = _wire(p)
        self.records.append(p)
        self.replica.apply(p)
        return self.table.apply(p)

    def pop(
        self, end: int, n: int, inv: int, now: int, key: Key = K, start: int = 0, match: int = 0
    ) -> list[Popped]:
        """`match` > 0: a tag filter that takes the offsets divisible by it."""
        q = self.table.get(key)
        cursor = start if q is None else q.cursor
        take = None
        if match:  # as a popper reads: the span ends before the first match it cannot take
            matching = [o for o in range(cursor, end) if o % match == 0]
            take, end = matching[:n], (matching[n] if len(matching) > n else end)
        p = self.table.plan_pop(key, start, end, n, inv, now, take=take)
        return [] if p is None else self._write(p)

    def ack(self, offset: int, gen: int, key: Key = K) -> None:
        self._write(self.table.plan_ack(key, offset, gen))

    def change(self, offset: int, gen: int, inv: int, now: int, key: Key = K) -> int:
        p = self.table.plan_change(key, offset, gen, inv, now)
        self._write(p)
        return int(p["gen"])

    def reset(self, to: int, key: Key = K) -> None:
        self._write(self.table.plan_reset(key, to))

    def renew(self, offset: int, gen: int, inv: int, now: int, key: Key = K) -> None:
        self._write(self.table.plan_renew(key, offset, gen, inv, now))


def snapshot(t: PopTable) -> dict[Key, tuple[int, int, dict[int, Any]]]:
    out = {}
    for k in t.queues():
        q = t.get(k)
        assert q is not None
        out[k] = (q.cursor, q.next_gen, dict(q.inflight))
    return out


def test_pop_ack_commit_point() -> None:
    m = Master()
    got = m.pop(end=5, n=3, inv=1000, now=0)
    assert [(p.offset, p.attempt) for p in got] == [(0, 1), (1, 1), (2, 1)]
    assert m.table.commit_point(K) == 0
    m.ack(1, got[1].gen)
    assert m.table.commit_point(K) == 0  # 0 is not acked: the commit point waits
    m.ack(0, got[0].gen)
    assert m.table.commit_point(K) == 2
    m.ack(2, got[2].gen)
    assert m.table.commit_point(K) == 3
    assert [p.offset for p in m.pop(end=5, n=10, inv=1000, now=0)] == [3, 4]
    assert m.pop(end=5, n=10, inv=1000, now=0) == []  # nothing new, nothing expired


def test_expired_come_back_first_with_the_attempt_counted() -> None:
    m = Master()
    first = m.pop(end=10, n=2, inv=100, now=0)
    assert m.table.expired(99) == []
    assert [o for _, o, _ in m.table.expired(100)] == [0, 1]
    again = m.pop(end=10, n=3, inv=100, now=100)
    assert [(p.offset, p.attempt) for p in again] == [(0, 2), (1, 2), (2, 1)]
    with pytest.raises(InvalidReceiptError):  # the first hand-out's handle is stale now
        m.table.plan_ack(K, 0, first[0].gen)
    m.ack(0, again[0].gen)
    assert m.table.commit_point(K) == 1


def test_change_invisible_gives_a_new_generation() -> None:
    m = Master()
    (p,) = m.pop(end=1, n=1, inv=100, now=0)
    gen = m.change(0, p.gen, 5000, now=50)
    assert gen > p.gen
    assert m.table.expired(1000) == []  # the deadline moved
    with pytest.raises(InvalidReceiptError):
        m.table.plan_change(K, 0, p.gen, 10, now_ms=60)
    with pytest.raises(InvalidReceiptError):
        m.table.plan_ack(K, 0, p.gen)
    m.ack(0, gen)
    with pytest.raises(InvalidReceiptError):  # acked already
        m.table.plan_ack(K, 0, gen)
    # invisible 0: visible again at once
    (q,) = m.pop(end=2, n=1, inv=100, now=0)
    m.change(1, q.gen, 0, now=10)
    assert [o for _, o, _ in m.table.expired(10)] == [1]


def test_a_renewal_moves_the_deadline_and_keeps_the_handle() -> None:
    m = Master()
    (p,) = m.pop(end=10, n=1, inv=100, now=0)
    m.renew(0, p.gen, 100, now=90)
    e = m.table.get(K).inflight[0]  # type: ignore[union-attr]
    assert (e.gen, e.deadline_ms, e.attempt) == (p.gen, 190, 1)  # the same handle acks it
    assert m.table.expired(150) == [] and [o for _, o, _ in m.table.expired(190)] == [0]
    m.renew(0, p.gen, 10, now=100)  # a shorter one does not pull the deadline in
    assert m.table.get(K).inflight[0].deadline_ms == 190  # type: ignore[union-attr]
    gen = m.change(0, p.gen, 5, now=100)
    with pytest.raises(InvalidReceiptError):  # handed out again / changed since: refused
        m.table.plan_renew(K, 0, p.gen, 100, now_ms=100)
    stale = {"op": "rnw", "group": "G", "topic": "T", "queue": 0, "o": 0, "gen": p.gen, "dl": 10_000}
    m.table.apply(stale)  # a record of an older generation: a no-op
    assert m.table.get(K).inflight[0].deadline_ms == 105 and m.table.get(K).inflight[0].gen == gen  # type: ignore[union-attr]
    with pytest.raises(InvalidArgumentError):
        m.table.plan_renew(K, 0, gen, 0, now_ms=100)


def test_acks_of_one_queue_are_one_record_and_refusals_stay_per_receipt() -> None:
    m = Master()
    got = m.pop(end=5, n=4, inv=100, now=0)
    m.ack(3, got[3].gen)
    again = m.pop(end=5, n=1, inv=100, now=100)  # 0 and 1 come back: their first handles are stale
    assert [(p.offset, p.attempt) for p in again] == [(0, 2)]
    receipts = [(2, got[2].gen), (0, got[0].gen), (3, got[3].gen), (0, again[0].gen), (2, got[2].gen)]
    plan, errors = m.table.plan_acks(K, receipts)
    assert plan is not None and plan["o"] == [2, 0]  # one record for the queue, in the call's order
    assert [e is None for e in errors] == [True, False, False, True, False]
    assert "handed out again" in str(errors[1])
    assert "not in flight (acked?)" in str(errors[2])
    assert "earlier receipt handle of this call" in str(errors[4])
    m._write(plan)
    assert m.table.commit_point(K) == 1 and snapshot(m.replica) == snapshot(m.table)
    assert m.table.plan_acks(K, [(0, got[0].gen)])[0] is None  # nothing live: no record


def test_a_tag_filter_passes_what_does_not_match_as_acked() -> None:
    """The offsets a filter does not take are passed by the cursor in the
    same record, acked at once: the commit point moves past them."""
    m = Master()
    got = m.pop(end=10, n=2, inv=100, now=0, match=3)  # takes 0 and 3; the span ends before 6
    assert [(p.offset, p.attempt) for p in got] == [(0, 1), (3, 1)]
    assert m.records[-1]["t"] == [0, 3] and m.records[-1]["n"] == 6
    q = m.table.get(K)
    assert q is not None and q.cursor == 6 and sorted(q.inflight) == [0, 3]
    m.ack(0, got[0].gen)
    assert m.table.commit_point(K) == 3  # 1 and 2 did not match: consumed
    seven = m.pop(end=8, n=5, inv=100, now=0, match=7)  # 6 is passed, 7 taken
    assert [p.offset for p in seven] == [7]
    gen = m.table.get(K).next_gen  # type: ignore[union-attr]
    assert m.pop(end=11, n=5, inv=100, now=0, match=100) == []  # nothing matches: the cursor passes 8..10
    assert m.table.get(K).cursor == 11 and m.table.get(K).next_gen == gen + 1  # type: ignore[union-attr]
    assert m.records[-1]["t"] == [] and m.records[-1]["n"] == 3
    assert m.pop(end=11, n=5, inv=100, now=0, match=100) == []
    assert len(m.records) == 4  # nothing new to pass: no record
    once = snapshot(m.table)
    for p in m.records:  # applied twice: a no-op (the passing record took a generation too)
        m.table.apply(p)
    assert snapshot(m.table) == once == snapshot(m.replica)
    every = m.pop(end=14, n=5, inv=100, now=0, match=1)  # a filter that takes all: no `t`
    assert [p.offset for p in every] == [11, 12, 13] and "t" not in m.records[-1]


def test_a_tag_filter_stops_where_the_bounds_do() -> None:
    m = Master(per_queue=2)
    got = m.pop(end=20, n=10, inv=100, now=0, match=4)  # 0, 4 fit; the cursor stops before 8
    assert [p.offset for p in got] == [0, 4] and m.table.get(K).cursor == 8  # type: ignore[union-attr]
    with pytest.raises(QuotaExceededError):  # the next matching one does not fit: nothing to pass
        m.pop(end=20, n=10, inv=100, now=0, match=4)
    bad = {**m.records[-1], "gen": 99, "t": [5, 1]}
    with pytest.raises(ValueError):
        m.table.apply(bad)


class _NoWalks(dict[int, Any]):
    """An in-flight table that refuses to be walked (a scan of all entries)."""

    def __iter__(self) -> Any:
        raise AssertionError("walked every in-flight entry")

    def items(self) -> Any:
        raise AssertionError("walked every in-flight entry")


def test_expiry_comes_from_a_deadline_heap_not_a_walk_of_all_entries() -> None:
    """Each revive tick asks for the expired entries, and each pop for its
    queue's, under the table's lock (which the store's appends wait on): that
    must cost what expired, not what is in flight (review risk 9)."""
    m = Master()
    early = m.pop(end=5000, n=10, inv=100, now=0)
    m.pop(end=5000, n=1000, inv=60_000, now=0)
    m.pop(end=5000, n=1000, inv=60_000, now=0, key=("G", "T", 1))
    for t in (m.table, m.replica):
        for k in t.queues():
            q = t.get(k)
            assert q is not None
            q.inflight = _NoWalks(q.inflight)
    assert m.table.expired(99) == [] and m.table.again(K, 99) == []
    assert [o for _, o, _ in m.table.expired(100)] == list(range(10))
    again = m.pop(end=5000, n=3, inv=100, now=100)  # 0..2 again, with a new deadline
    assert [p.offset for p in again] == [0, 1, 2]
    m.ack(3, early[3].gen)
    m.change(4, early[4].gen, 1000, now=100)
    assert m.table.again(K, 150) == [5, 6, 7, 8, 9]
    assert m.table.again(K, 200) == [0, 1, 2, 5, 6, 7, 8, 9]
    assert m.table.again(K, 1100) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert len(m.table.expired(60_000)) == 2010 - 1  # all but the acked one
    m.ack(0, again[0].gen)
    m.ack(2, again[2].gen)
    assert m.table.commit_point(K) == 1 and m.table.commit_point(("G", "T", 1)) == 0
    m.ack(1, again[1].gen)
    assert m.table.commit_point(K) == 4  # (3 was acked)


def test_bounds_refuse_with_a_clear_error() -> None:
    m = Master(per_queue=3, per_group=5)
    assert len(m.pop(end=10, n=10, inv=100, now=0)) == 3
    with pytest.raises(QuotaExceededError, match="max_pop_inflight_per_queue"):
        m.pop(end=10, n=1, inv=100, now=0)
    assert len(m.pop(end=10, n=10, inv=100, now=0, key=("G", "T", 1))) == 2  # the group's room left
    with pytest.raises(QuotaExceededError, match="max_pop_inflight_per_group"):
        m.pop(end=10, n=1, inv=100, now=0, key=("G", "T", 2))
    assert m.pop(end=0, n=1, inv=100, now=0, key=("G", "T", 2)) == []  # nothing to pop: no refusal
    assert len(m.pop(end=10, n=10, inv=100, now=0, key=("H", "T", 0))) == 3  # another group
    # expired entries still come back when full
    assert [p.attempt for p in m.pop(end=10, n=10, inv=100, now=100)] == [2, 2, 2]


def test_bad_arguments() -> None:
    t = PopTable()
    for n in (0, 1025):
        with pytest.raises(InvalidArgumentError):
            t.plan_pop(K, 0, 10, n, 100, 0)
    with pytest.raises(InvalidArgumentError):
        t.plan_pop(K, 0, 10, 1, 0, 0)


def test_new_queue_starts_where_told_and_gen_floor() -> None:
    t = PopTable()
    p = t.plan_pop(K, 7, 10, 5, 100, 0, gen_floor=3 << 32)
    assert p is not None
    got = t.apply(_wire(p))
    assert [x.offset for x in got] == [7, 8, 9]
    assert got[0].gen == 3 << 32
    assert t.commit_point(K) == 7


def test_first_record_seen_mid_history_redelivers_the_unknown() -> None:
    """A queue's early records gone (retention): what lay between the commit
    point and the cursor then counts as in flight and expired."""
    t = PopTable()
    rec = {"op": "pop", "group": "G", "topic": "T", "queue": 0, "from": 5, "n": 2, "re": [], "dl": 100,
           "gen": 9, "c": 3}  # fmt: skip
    t.apply(rec)
    assert t.commit_point(K) == 3
    assert [o for _, o, _ in t.expired(0)] == [3, 4]


def test_a_record_applied_twice_is_applied_once() -> None:
    """A slave re-applies a chunk after a failed side-file write: the
    generation makes a `pop` or `chg` seen before a no-op."""
    m = Master()
    a = m.pop(end=10, n=3, inv=100, now=0)
    gen = m.change(1, a[1].gen, 50, 0)
    m.ack(0, a[0].gen)
    m.pop(end=10, n=2, inv=100, now=200)  # 1 and 2 come back, no new ones
    once = snapshot(m.table)
    for p in m.records:
        assert m.table.apply(p) == []  # nothing handed out again
    assert snapshot(m.table) == once
    assert m.table.get(K).cursor == 3  # type: ignore[union-attr]
    assert m.table.inflight("G") == 2
    assert gen < m.table.get(K).next_gen  # type: ignore[union-attr]


def test_a_reset_moves_the_cursor_drops_what_is_in_flight_and_applies_once() -> None:
    m = Master()
    a = m.pop(end=10, n=4, inv=100, now=0)
    m.ack(0, a[0].gen)
    m.reset(7)
    q = m.table.get(K)
    assert q is not None and (q.cursor, q.commit, q.inflight) == (7, 7, {})
    assert m.table.inflight("G") == 0
    with pytest.raises(InvalidReceiptError):  # a handle from before the reset acks nothing
        m.table.plan_ack(K, 1, a[1].gen)
    got = m.pop(end=10, n=2, inv=100, now=1)  # pops after the reset land where asked
    assert [p.offset for p in got] == [7, 8] and min(p.gen for p in got) > max(p.gen for p in a)
    m.reset(2)  # back, too: what lies after it is handed out again
    assert [p.offset for p in m.pop(end=10, n=3, inv=100, now=2)] == [2, 3, 4]
    once = snapshot(m.table)
    resets = [p for p in m.records if p["op"] == "rst"]
    for p in resets:  # seen again alone, after what followed it: a no-op
        m.table.apply(p)
    assert snapshot(m.table) == once
    for p in m.records:  # a slave re-applying the records: every reset applied once
        m.table.apply(p)
    assert snapshot(m.table) == once == snapshot(m.replica)
    fresh = m.table.plan_reset(("G", "T", 5), 3)  # a queue never popped starts at the cursor given
    m._write(fresh)
    assert m.table.get(("G", "T", 5)).cursor == 3  # type: ignore[union-attr]
    for bad in (-1, True, "3"):
        with pytest.raises(InvalidArgumentError):
            m.table.plan_reset(K, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.table.apply({"op": "rst", "group": "G", "topic": "T", "queue": 0, "to": -4, "gen": 1 << 40})
    assert snapshot(m.table)[K] == once[K]


def test_the_unknown_span_comes_back_whole_whatever_the_bounds() -> None:
    """The span [c, from) of a queue first seen mid-history is rebuilt whole:
    a cap from the config would skip unacked messages (and make a slave with
    other bounds disagree)."""
    rec = {"op": "pop", "group": "G", "topic": "T", "queue": 0, "from": 10, "n": 1, "re": [], "dl": 100,
           "gen": 9, "c": 3}  # fmt: skip
    small, big = PopTable(max_inflight_per_queue=2), PopTable()
    for t in (small, big):
        t.apply(rec)
        assert t.commit_point(K) == 3
        assert [o for _, o, _ in t.expired(0)] == list(range(3, 10))
    assert snapshot(small) == snapshot(big)


def test_malformed_records_change_nothing() -> None:
    t = PopTable()
    for bad in ({"op": "pop", "group": "G"}, {"op": "zap", "group": "G", "topic": "T", "queue": 0},
                {"op": "ack", "group": "G", "topic": "T", "queue": "x", "o": [1]}):  # fmt: skip
        with pytest.raises((KeyError, TypeError, ValueError)):
            t.apply(bad)
    assert t.queues() == []


def test_rebuild_after_a_cut() -> None:
    m = Master()
    a = m.pop(end=10, n=3, inv=100, now=0)
    m.ack(0, a[0].gen)
    keep = len(m.records)
    before = snapshot(m.table)
    m.ack(1, a[1].gen)
    m.pop(end=10, n=4, inv=100, now=0)
    m.pop(end=10, n=4, inv=100, now=0, key=("G", "U", 0))
    m.table.rebuild([K, ("G", "U", 0)], m.records[:keep])
    assert snapshot(m.table) == before
    assert m.table.inflight("G") == 2


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("pop"), st.integers(1, 6), st.integers(1, 50)),
        st.tuples(st.just("fpop"), st.integers(1, 6), st.integers(1, 4)),  # a tag filter: o % b == 0
        st.tuples(st.just("ack"), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("chg"), st.integers(0, 40), st.integers(0, 50)),
        st.tuples(st.just("rnw"), st.integers(0, 40), st.integers(1, 50)),
        st.tuples(st.just("tick"), st.integers(0, 60), st.just(0)),
        st.tuples(st.just("grow"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("rst"), st.integers(0, 30), st.just(0)),  # an operator's reset to a
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(1, 12))
def test_model(ops: list[tuple[str, int, Any]], per_queue: int) -> None:
    """Against a model: every offset handed out (or passed by a tag filter:
    acked at once) is acked or in flight; the
    commit point never passes an unacked offset; an older generation never
    acks, changes or renews; a renewal keeps the generation and only moves
    a deadline later; generations never repeat; the replica (the same
    records) and a replay of the records agree with the master."""
    m = Master(per_queue=per_queue)
    now, end = 0, 10
    handed: set[int] = set()
    acked: set[int] = set()
    live: dict[int, int] = {}  # offset -> its newest generation
    stale: list[tuple[int, int]] = []
    gens: set[int] = set()
    for op, a, b in ops:
        if op in ("pop", "fpop"):
            q = m.table.get(K)
            before = 0 if q is None else q.cursor
            try:
                got = m.pop(end, a, b, now) if op == "pop" else m.pop(end, a, 30, now, match=b)
            except QuotaExceededError:
                assert len(live) >= per_queue
                continue
            q = m.table.get(K)
            passed = set(range(before, 0 if q is None else q.cursor)) - {p.offset for p in got}
            assert op == "fpop" or not passed
            assert all(o % b for o in passed)  # only what does not match is passed
            handed |= passed  # (passed: consumed, as if acked)
            acked |= passed
            for p in got:
                assert p.offset not in acked
                assert p.gen not in gens
                gens.add(p.gen)
                if p.offset in live:
                    stale.append((p.offset, live[p.offset]))
                live[p.offset] = p.gen
                handed.add(p.offset)
        elif op == "ack":
            if a in live and b:
                m.ack(a, live.pop(a))
                acked.add(a)
            elif stale:
                off, gen = stale[a % len(stale)]
                with pytest.raises(InvalidReceiptError):
                    m.table.plan_ack(K, off, gen)
        elif op == "chg":
            if a in live:
                gen = m.change(a, live[a], b, now)
                assert gen not in gens
                gens.add(gen)
                stale.append((a, live[a]))
                live[a] = gen
        elif op == "rnw":
            if a in live:
                before = m.table.get(K).inflight[a]  # type: ignore[union-attr]
                m.renew(a, live[a], b, now)
                after = m.table.get(K).inflight[a]  # type: ignore[union-attr]
                assert after.gen == before.gen == live[a]  # the same handle
                assert after.deadline_ms == max(before.deadline_ms, now + b)
            elif stale:
                off, gen = stale[a % len(stale)]
                with pytest.raises(InvalidReceiptError):
                    m.table.plan_renew(K, off, gen, b, now)
        elif op == "tick":
            now += a
        elif op == "rst":  # everything below the new cursor counts as consumed, nothing in flight
            m.reset(a)
            stale += list(live.items())
            live.clear()
            handed, acked = set(range(a)), set(range(a))
        else:
            end += a
        q = m.table.get(K)
        if q is None:
            continue
        assert set(q.inflight) == set(live)
        assert set(range(q.cursor)) == handed == acked | set(live)
        assert q.commit == min(set(range(q.cursor)) - acked, default=q.cursor)
        assert m.table.inflight("G") == len(live)
    assert snapshot(m.replica) == snapshot(m.table)
    replay = PopTable(per_queue)
    for p in m.records:
        replay.apply(p)
    assert snapshot(replay) == snapshot(m.table)
    twice = PopTable(per_queue)
    for p in m.records:  # each record applied twice (a slave re-applying a chunk)
        twice.apply(p)
        twice.apply(p)
    assert snapshot(twice) == snapshot(m.table)
    assert twice.inflight("G") == m.table.inflight("G")
    for p in m.records:  # and the whole run again, after the state it built
        replay.apply(p)
    assert snapshot(replay) == snapshot(m.table)
    assert replay.inflight("G") == m.table.inflight("G")


# ---- receipt handles -----------------------------------------------------------


def test_handle_round_trip_and_refusals() -> None:
    key = handle_key("s3cret", "broker-a")
    r = Receipt("broker-a", "G", "%RETRY%G", 3, 1 << 40, (7 << 32) + 5)
    h = encode_handle(key, r)
    assert decode_handle(key, h) == r
    with pytest.raises(InvalidReceiptError):  # another broker group's key
        decode_handle(handle_key("s3cret", "broker-b"), h)
    with pytest.raises(InvalidReceiptError):  # another cluster secret
        decode_handle(handle_key("other", "broker-a"), h)
    forged = encode_handle(handle_key("guess", "broker-a"), r)
    with pytest.raises(InvalidReceiptError):
        decode_handle(key, forged)
    for bad in ("", "v1..", "x" * 2000, "v2" + h[2:], h + "A", "v1.!!!.???", 12):
        with pytest.raises(InvalidReceiptError):
            decode_handle(key, bad)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_an_altered_handle_is_refused(pos: int, xor: int) -> None:
    key = handle_key("k", "b")
    h = encode_handle(key, Receipt("b", "G", "T", 1, 2, 3))
    i = pos % len(h)
    changed = h[:i] + chr(ord(h[i]) ^ (xor or 1)) + h[i + 1 :]
    try:
        got = decode_handle(key, changed)
    except InvalidReceiptError:
        return
    # base64 padding bits may change without changing the bytes: then it is the same receipt
    assert got == Receipt("b", "G", "T", 1, 2, 3)


def test_the_pop_rpcs_need_subscribe_as_the_group_and_a_master() -> None:
    from types import SimpleNamespace

    from core.access import RPC_ACCESS, Serves
    from core.security.acl import parse_acl
    from core.security.guard import CLIENT_RULES

    perms = parse_acl(
        '[[account]]\naccess_key = "a"\nsecret_key = "0123456789abcdef"\nsubscribe = ["orders"]\n'
        'groups = ["billing"]\n'
    ).permissions["a"]
    for method in ("Pop", "AckPop", "ChangeInvisible", "PopDeadLetter"):
        name = f"/tailrace.v1.Broker/{method}"
        assert RPC_ACCESS[name].serves is Serves.LEADER  # NOT_MASTER on a slave
        rule = CLIENT_RULES[name]
        assert rule(perms, SimpleNamespace(topic="orders", group="billing")) is None
        assert rule(perms, SimpleNamespace(topic="orders", group="other"))
        assert rule(perms, SimpleNamespace(topic="payments", group="billing"))


# ---- the snapshot against a log (core/pop/snapshot.py) -------------------------------


class _Log:
    segment_bytes = 1 << 20

    def __init__(self, lo: int, hi: int) -> None:
        self.min_offset, self.max_offset = lo, hi

    def view(self, offset: int, size: int) -> memoryview:
        return memoryview(bytes(size))  # (the fingerprint matches: only `at` decides)


class _Store:
    """The log's pop records as (offset, payload), from `lo` on (retention removed the rest)."""

    def __init__(self, lo: int, hi: int, records: list[tuple[int, dict[str, Any]]]) -> None:
        self.commitlog = _Log(lo, hi)
        self.records = records

    def system_payloads(self, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        lo = max(start, self.commitlog.min_offset)
        return [p for o, p in self.records if lo <= o and (stop is None or o < stop)]


def test_a_snapshot_older_than_the_log_start_is_not_used(tmp_path: Any) -> None:
    """Retention removed the records after the snapshot's `at`: its cursor
    would make the span they handed out look acked. Without it, the first
    record kept rebuilds that span as in flight (the `c` rule)."""
    old = PopTable()
    old.apply({"op": "pop", "group": "G", "topic": "T", "queue": 0, "from": 0, "n": 3, "re": [], "dl": 9,
               "gen": 1, "c": 0})  # fmt: skip
    old.apply({"op": "ack", "group": "G", "topic": "T", "queue": 0, "o": [0, 1, 2]})
    snap = pop_snapshot.dump(old, 100)
    snap["fp"] = pop_snapshot.fingerprint(_Log(0, 100), 100)  # type: ignore[arg-type]
    (tmp_path / pop_snapshot.POP_FILE).write_text(json.dumps(snap))
    gone = {"op": "pop", "group": "G", "topic": "T", "queue": 0, "from": 3, "n": 3, "re": [], "dl": 9,
            "gen": 4, "c": 3}  # fmt: skip
    kept = {"op": "pop", "group": "G", "topic": "T", "queue": 0, "from": 6, "n": 2, "re": [], "dl": 9,
            "gen": 7, "c": 3}  # fmt: skip
    store = _Store(200, 300, [(150, gone), (250, kept)])
    t = PopTable()
    loaded = pop_snapshot.load(t, store, tmp_path)  # type: ignore[arg-type]
    assert loaded.start == 200
    assert t.commit_point(K) == 3  # 3, 4 and 5 were never acked
    assert [o for _, o, _ in t.expired(0)] == [3, 4, 5]
    assert not (tmp_path / pop_snapshot.POP_FILE).exists()
