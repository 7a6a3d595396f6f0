"""chat_server.coalesce: batching by arrival, errors, and closing the source."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from chat_server.coalesce import coalesce


async def _from_queue(q: asyncio.Queue, closed: list[bool]):
    try:
        while (item := await q.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        closed.append(True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_an_idle_consumer_gets_each_item_as_it_arrives():
    async def main():
        q: asyncio.Queue = asyncio.Queue()
        got = []
        async with contextlib.aclosing(coalesce(_from_queue(q, []))) as batches:
            for i in range(3):
                q.put_nowait(i)
                got.append(await anext(batches))
            q.put_nowait(None)
            assert [b async for b in batches] == []
        return got

    assert run(main()) == [[0], [1], [2]]


def test_items_that_arrive_while_the_consumer_is_busy_come_as_one_batch():
    async def main():
        q: asyncio.Queue = asyncio.Queue()
        async with contextlib.aclosing(coalesce(_from_queue(q, []))) as batches:
            q.put_nowait("a")
            first = await anext(batches)
            for item in ("b", "c", "d"):
                q.put_nowait(item)
            await asyncio.sleep(0.01)  # the consumer is "busy"; the pump keeps reading
            second = await anext(batches)
            q.put_nowait(None)
            rest = [b async for b in batches]
        return first, second, rest

    assert run(main()) == (["a"], ["b", "c", "d"], [])


def test_an_error_comes_after_the_items_before_it():
    async def main():
        q: asyncio.Queue = asyncio.Queue()
        for item in ("x", "y", ValueError("boom")):
            q.put_nowait(item)
        got = []
        with pytest.raises(ValueError, match="boom"):
            async for batch in coalesce(_from_queue(q, [])):
                got.append(batch)
        return got

    assert run(main()) == [["x", "y"]]


def test_closing_early_closes_the_source():
    async def main():
        q: asyncio.Queue = asyncio.Queue()
        closed: list[bool] = []
        q.put_nowait(1)
        batches = coalesce(_from_queue(q, closed))
        assert await anext(batches) == [1]
        await batches.aclose()  # the source is blocked in q.get(): it must be cancelled
        return closed

    assert run(main()) == [True]
