"""Awaiting independent reads side by side."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

#: Reads in flight at once for one `together` call (Graph answers a tenant's requests in parallel; its
#: throttling is the gateway's to keep).
AT_ONCE = 8


async def together(calls: Iterable[Awaitable[T]], *, at_once: int = AT_ONCE) -> list[T]:
    """The results of `calls` in their order, at most `at_once` awaited at a time. The first failure cancels
    the calls still running and is raised as it is (not wrapped in a group)."""
    semaphore = asyncio.Semaphore(at_once)

    async def one(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    pending = list(calls)
    tasks = [asyncio.ensure_future(one(call)) for call in pending]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in pending:
            if inspect.iscoroutine(call):
                call.close()  # one never started: closed, so it is not reported as never awaited
        raise
