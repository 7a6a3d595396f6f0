"""
chat_server.coalesce
~~~~~~~~~~~~~~~~~~~~

Group a stream's items by arrival: ``coalesce(source)`` yields lists, each
holding everything that arrived while the consumer was busy with the previous
list. An idle consumer gets every item on its own as soon as it arrives (no
added latency); a busy one catches up in one step.

Why: every answer token costs a pass of the answer filter, a frame encode and a
socket write. Under load the model's tokens arrive faster than one connection
can handle them one by one, and batching them is what keeps the server near the
model API's own throughput (docs/BENCHMARKS.md).

A pump task reads the source; closing the coalesced generator cancels the pump,
which closes the source (for the model stream: aborts the HTTP request).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")


class _Kind(enum.Enum):
    ITEM = enum.auto()
    ERROR = enum.auto()
    END = enum.auto()


async def coalesce(source: AsyncGenerator[T, None]) -> AsyncGenerator[list[T], None]:
    """Yield non-empty lists of ``source``'s items; re-raise its exception after
    yielding what came before it."""
    queue: asyncio.Queue[tuple[_Kind, object]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    queue.put_nowait((_Kind.ITEM, item))
        except Exception as exc:  # handed to the consumer, raised there
            queue.put_nowait((_Kind.ERROR, exc))
        else:
            queue.put_nowait((_Kind.END, None))

    task = asyncio.create_task(pump())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            items: list[T] = []
            for kind, value in batch:
                if kind is _Kind.ITEM:
                    items.append(value)  # type: ignore[arg-type]
                    continue
                if items:
                    yield items
                if kind is _Kind.ERROR:
                    raise value  # type: ignore[misc]
                return
            yield items
    finally:
        if not task.done():
            task.cancel()
        # Wait for the pump to close the source; asyncio.wait never raises
        # the pump's own CancelledError into us.
        await asyncio.wait([task])
