"""chat_server.coalesce: batching by arrival, errors, and closing the source."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from chat_server.coalesce import BufferStats, ConsumerTooSlow, coalesce


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


# -- the bound (backpressure) and the pause budget ------------------------------------


async def _counting(produced: list[int], closed: list[bool], n: int = 1_000_000):
    """An instant source (like a very fast model): counts what was read from it."""
    try:
        for i in range(n):
            produced.append(i)
            yield "x" * 10
            await asyncio.sleep(0)
    finally:
        closed.append(True)


def test_a_consumer_that_stops_taking_pauses_the_source_at_the_limit():
    async def main():
        produced: list[int] = []
        closed: list[bool] = []
        stats = BufferStats()
        batches = coalesce(_counting(produced, closed), limit=1000, weight=len, stats=stats)
        first = await anext(batches)
        # The consumer is now "stuck" (a client that never reads): the pump may
        # fill the buffer up to the limit, then must stop reading the source.
        for _ in range(500):
            await asyncio.sleep(0)
        read_while_stuck = len(produced)
        for _ in range(500):
            await asyncio.sleep(0)
        assert len(produced) == read_while_stuck  # paused, not reading on
        assert stats.peak <= 1000 + 10  # at most one item beyond the limit
        assert not closed  # no budget: paused for as long as it takes
        # Taking the buffer lets the source go on.
        second = await anext(batches)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(produced) > read_while_stuck
        await batches.aclose()
        return first, second, closed

    first, second, closed = run(main())
    assert first == ["x" * 10]
    assert 90 <= len(second) <= 101
    assert closed == [True]


def test_without_a_limit_nothing_pauses():
    async def main():
        produced: list[int] = []
        batches = coalesce(_counting(produced, [], n=5000), weight=len)
        await anext(batches)
        for _ in range(6000):
            await asyncio.sleep(0)
        got = sum([len(b) async for b in batches])
        return len(produced), got

    assert run(main()) == (5000, 4999)


def test_a_source_paused_beyond_the_budget_is_closed_and_the_consumer_told():
    async def main():
        produced: list[int] = []
        closed: list[bool] = []
        stats = BufferStats()
        batches = coalesce(_counting(produced, closed), limit=100, weight=len,
                           pause_budget=0.2, stats=stats)
        got = [await anext(batches)]
        await asyncio.sleep(0.5)  # stuck past the budget
        assert closed == [True]  # the source (the model request, its slot) is released
        with pytest.raises(ConsumerTooSlow):
            async for batch in batches:
                got.append(batch)  # what was buffered is still delivered first
        return got, stats, len(produced)

    got, stats, produced = run(main())
    assert sum(len(b) for b in got) == produced
    assert stats.paused >= 0.2
    assert stats.peak <= 110


def test_a_consumer_that_keeps_up_never_spends_the_budget():
    async def main():
        closed: list[bool] = []
        stats = BufferStats()
        total = 0
        async for batch in coalesce(_counting([], closed, n=3000), limit=50, weight=len,
                                    pause_budget=0.5, stats=stats):
            total += len(batch)
        return total, closed

    assert run(main()) == (3000, [True])


def test_a_source_that_never_waits_does_not_keep_the_event_loop():
    # A model stream read from a full socket buffer hands over item after item
    # without waiting; other sessions must still get the loop in between.
    from itertools import pairwise

    from chat_server.coalesce import PUMP_STEP

    async def main():
        taken = [0]

        async def eager(n: int):
            for i in range(n):
                taken[0] += 1
                yield i

        seen: list[int] = []  # items taken so far, each time another task ran

        async def other() -> None:
            while True:
                seen.append(taken[0])
                await asyncio.sleep(0)

        probe = asyncio.create_task(other())
        got = sum([len(b) async for b in coalesce(eager(10_000))])
        probe.cancel()
        return got, max(b - a for a, b in pairwise(seen))

    got, most_between = run(main())
    assert got == 10_000
    assert most_between <= PUMP_STEP
