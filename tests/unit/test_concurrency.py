"""One policy shared by many threads and tasks: every call keeps its own attempt count."""

from __future__ import annotations

import asyncio
import threading

import invresilience as ir
from invresilience.testing import ManualClock


def test_threads_and_tasks_each_get_their_own_attempts() -> None:
    """8 threads and 100 asyncio tasks share one policy; each call's attempts are its own."""
    clock = ManualClock()
    policy = ir.RetryPolicy(on=ConnectionError, attempts=6, clock=clock, timeout=None)
    barrier = threading.Barrier(8)
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def make_call(name: str, failures: int) -> int:
        calls = 0

        def attempt() -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                barrier.wait() if name.startswith("thread") else None
            if calls <= failures:
                raise ConnectionError(name)
            return calls

        result = policy.call(attempt)
        with lock:
            seen[name] = calls
        return result

    def thread_body(index: int) -> None:
        for round_ in range(20):
            failures = (index + round_) % 5
            assert failures + 1 == make_call(f"thread-{index}-{round_}", failures)

    async def task_body(index: int) -> None:
        failures = index % 5
        calls = 0

        async def attempt() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)  # interleave the tasks between attempts
            if calls <= failures:
                raise ConnectionError(index)
            return calls

        assert failures + 1 == await policy.acall(attempt)
        with lock:
            seen[f"task-{index}"] = calls

    async def all_tasks() -> None:
        await asyncio.gather(*(task_body(i) for i in range(100)))

    threads = [threading.Thread(target=thread_body, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    asyncio.run(all_tasks())
    for thread in threads:
        thread.join()

    assert 8 * 20 + 100 == len(seen)
    for name, calls in seen.items():
        index = int(name.split("-")[1])
        failures = (index + int(name.split("-")[2])) % 5 if name.startswith("thread") else index % 5
        assert failures + 1 == calls, name


def test_budget_is_thread_safe() -> None:
    """Concurrent withdrawals never overspend a shared budget."""
    clock = ManualClock()
    budget = ir.RetryBudget(ratio=0.0, minimum_per_second=50.0, ttl=10, clock=clock)
    granted = []
    lock = threading.Lock()

    def spend() -> None:
        count = sum(budget.try_withdraw() for _ in range(500))
        with lock:
            granted.append(count)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 500 == sum(granted)
