"""The push consumer's processing pool: chunk sizing from the tasks' cost,
runs split into chunks, slow chunks handing work back, idle waits and
shutdown; and the process queue when offsets arrive out of order."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.consume_pool import ChunkPlan, ConsumePool, Run, RunFn
from consumer.process_queue import ProcessQueue
from consumer.pull_consumer import ReceivedMessage
from deploy.waits import poll_until

pytestmark = pytest.mark.unit


def test_chunk_plan_sizes_chunks_from_the_cost_of_tasks() -> None:
    plan = ChunkPlan(chunk_s=0.001, max_chunk=300)
    assert plan.size(64) == 1 and plan.chunks(64) == 64  # unmeasured: as if slow, one each
    for _ in range(40):
        plan.ran(100, 100 * 2e-6)  # 2 µs a task
    assert plan.size(10_000) == 300 and plan.size(64) == 64 and plan.chunks(64) == 1
    for _ in range(40):
        plan.ran(1, 0.002)  # tasks got slow: 2 ms
    assert plan.size(64) == 1 and plan.chunks(64) == 64
    plan.ran(0, 1.0)  # nothing ran: no change
    assert plan.size(64) == 1


def test_run_splits_into_tasks_of_per_task_items() -> None:
    def fn(ctx: object, items: list[int], per_task: int, deadline: float) -> int:
        return len(items)

    run = Run(fn, None, list(range(10)), 3)
    assert run.tasks == 4  # 3 + 3 + 3 + 1
    head = run.split(2)
    assert head.items == [0, 1, 2, 3, 4, 5] and head.start == 0 and head.tasks == 2
    assert run.start == 6 and run.tasks == 2
    rest = run.split(5)  # more than is left: the rest
    assert rest.items == [6, 7, 8, 9] and run.tasks == 0


def _recorder(seen: list[tuple[int, str]], cost_s: float) -> RunFn:
    """A run function noting (item, thread) for each item, each taking `cost_s`."""
    lock = threading.Lock()

    def fn(ctx: object, items: list[int], per_task: int, deadline: float) -> int:
        for i, item in enumerate(items):
            if cost_s:
                time.sleep(cost_s)
            with lock:
                seen.append((item, threading.current_thread().name))
            if time.perf_counter() > deadline:
                return i + 1
        return len(items)

    return fn


def test_cheap_tasks_go_in_few_chunks_slow_ones_to_every_thread() -> None:
    seen: list[tuple[int, str]] = []
    pool = ConsumePool(4)
    try:
        pool.plan.cost_s = 1e-6  # measured cheap: a chunk takes them all
        pool.submit_run(_recorder(seen, 0.0), None, list(range(300)), 1)
        assert pool.wait_idle(5) == 0
        assert sorted(i for i, _ in seen) == list(range(300))
        assert len({t for _, t in seen}) == 1  # one thread, one hand-off
        seen.clear()
        pool.plan.cost_s = 0.05  # measured slow: one task a thread, all threads at once
        t0 = time.monotonic()
        pool.submit_run(_recorder(seen, 0.05), None, list(range(8)), 1)
        assert pool.wait_idle(5) == 0
        assert len({t for _, t in seen}) == 4 and time.monotonic() - t0 < 0.3  # 2 rounds of 50 ms
    finally:
        pool.shutdown()


def test_the_thread_that_slept_last_is_woken_first() -> None:
    seen: list[tuple[int, str]] = []
    pool = ConsumePool(4)
    try:
        pool.plan.cost_s = 1e-6  # cheap: one thread a run
        for k in range(5):
            poll_until(lambda: len(pool._parked) == 4, 5, "every thread asleep")
            pool.submit_run(_recorder(seen, 0.0), None, [k] * 10, 1)
            assert pool.wait_idle(5) == 0
        assert len(seen) == 50 and len({t for _, t in seen}) == 1  # the same warm thread
    finally:
        pool.shutdown()


def test_a_chunk_that_turns_slow_hands_the_rest_back() -> None:
    seen: list[tuple[int, str]] = []
    pool = ConsumePool(2, give_back_s=0.01)
    try:
        pool.plan.cost_s = 1e-6  # planned as cheap: the first thread takes all ten
        pool.submit_run(_recorder(seen, 0.03), None, list(range(10)), 1)
        assert pool.wait_idle(5) == 0
        assert sorted(i for i, _ in seen) == list(range(10))
        assert len({t for _, t in seen}) == 2  # after 10 ms the rest went to the other thread too
    finally:
        pool.shutdown()


def test_wait_idle_counts_tasks_and_shutdown_drops_the_queued() -> None:
    gate = threading.Event()
    ran: list[int] = []
    pool = ConsumePool(1)
    pool.submit(gate.wait, 5)
    for i in range(3):
        pool.submit(ran.append, i)
    assert pool.wait_idle(0.05) == 4  # one blocked, three queued behind it
    pool.shutdown()
    assert pool.wait_idle(0.05) == 1  # the queued ones dropped, the running one goes on
    gate.set()
    poll_until(lambda: pool.wait_idle(0) == 0, 5, "the running task")
    pool.submit(ran.append, 9)  # after shutdown: dropped
    assert ran == [] and pool.wait_idle(0) == 0


def test_a_task_that_raises_is_logged_and_counted_done(caplog: pytest.LogCaptureFixture) -> None:
    pool = ConsumePool(2)
    try:
        pool.submit(lambda: 1 / 0)
        assert pool.wait_idle(5) == 0
    finally:
        pool.shutdown()
    assert "processing task failed" in caplog.text


def msg(offset: int) -> ReceivedMessage:
    return ReceivedMessage("t", 0, offset, 0, 0, 0, 0, "", "", {}, b"x" * 10, 0)


def test_process_queue_keeps_the_lowest_offset_whatever_the_arrival_order() -> None:
    pq = ProcessQueue()
    pq.add([msg(o) for o in (20, 21, 22)])
    pq.add([msg(o) for o in (5, 30, 6)])  # below and above what is pending, mixed
    assert pq.commit_point(40) == 5 and pq.max_seen == 30 and pq.count == 6
    pq.done([5, 20])
    assert pq.commit_point(40) == 6
    pq.done([6, 21, 22])
    assert pq.commit_point(40) == 30 and pq.bytes == 10
    pq.done([30])
    assert pq.commit_point(40) == 40 and pq.count == 0
