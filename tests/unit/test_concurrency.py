"""shared.services.concurrency.together: independent reads side by side, in order, the first failure ending
the others."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from shared.services.concurrency import together


async def test_results_come_in_the_order_of_the_calls_whatever_finishes_first() -> None:
    async def after(value: int, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return value

    assert await together(after(n, 0.01 * (5 - n)) for n in range(5)) == [0, 1, 2, 3, 4]


async def test_no_more_than_at_once_calls_run_at_a_time() -> None:
    running = most = 0

    async def call() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1

    await together((call() for _ in range(20)), at_once=3)
    assert most == 3


async def test_the_first_failure_is_raised_as_it_is_and_cancels_the_rest_without_warnings() -> None:
    finished: list[int] = []

    async def slow(n: int) -> int:
        await asyncio.sleep(5)
        finished.append(n)
        return n

    async def broken() -> int:
        await asyncio.sleep(0.001)
        raise LookupError("the link expired")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LookupError, match="the link expired"):
            await asyncio.wait_for(together([broken(), *(slow(n) for n in range(10))], at_once=2), 2)
        gc.collect()  # a call never started would warn "never awaited" when collected
    assert finished == []
