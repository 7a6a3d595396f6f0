"""
chat_server.coalesce
~~~~~~~~~~~~~~~~~~~~

Group a stream's items by arrival, with a bounded buffer: ``coalesce(source)``
yields lists, each holding everything that arrived while the consumer was busy
with the previous list. An idle consumer gets every item on its own as soon as
it arrives (no added latency); a busy one catches up in one step.

Why batches: every answer token costs a pass of the answer filter, a frame
encode and a socket write. Under load the model's tokens arrive faster than one
connection can handle them one by one, and batching them is what keeps the
server near the model API's own throughput (docs/BENCHMARKS.md).

Why a bound (backpressure): a pump task reads the source while the consumer
works. A consumer that cannot keep up (a client that reads slowly or not at
all, so the consumer waits on its socket) must not make the pump pile up the
model's output in memory. Once ``limit`` (by ``weight``, e.g. characters) is
waiting, the pump stops reading the source until the consumer takes the
buffer; the source is then paused (for the model stream: its HTTP response is
not read, so the model service is held back by TCP flow control).

A paused source still holds whatever it holds (for the model stream: a
scheduler slot), so a pause may not last for ever: once the source has been
paused for ``pause_budget`` seconds in total, the pump closes it and the
consumer, after the items already buffered, gets :exc:`ConsumerTooSlow`. A
consumer that keeps up never pauses the source.

A source that never has to wait (a model stream read from a socket buffer
that is already full: hundreds of NDJSON lines per read, each parsed in turn)
would keep the event loop for as long as it has items; the pump lets the other
tasks run after every :data:`PUMP_STEP` items it takes.

Closing the coalesced generator cancels the pump, which closes the source (for
the model stream: aborts the HTTP request).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: What one answer may hold waiting for its client, in characters of answer text
#: (at most 4 bytes each in UTF-8). Real models produce tens of characters a second,
#: so only a client that has stopped reading (or a test's instant model) fills it.
ANSWER_BUFFER_LIMIT = 64 * 1024
#: Seconds an answer's generation may stay paused, in total, because its client
#: reads more slowly than the model writes (the same as the server's write deadline:
#: a client that stops reading altogether is cut off by that deadline first).
PAUSE_BUDGET = 15.0
#: Items the pump takes before it lets the other tasks on the event loop run
#: (a model's line costs tens of microseconds to read and parse).
PUMP_STEP = 64

__all__ = [
    "ANSWER_BUFFER_LIMIT",
    "PAUSE_BUDGET",
    "PUMP_STEP",
    "BufferStats",
    "ConsumerTooSlow",
    "coalesce",
]


class ConsumerTooSlow(Exception):
    """The source was paused for longer than the pause budget and was closed."""


@dataclass
class BufferStats:
    """Filled in while the coalesced stream runs (for logs and benchmarks)."""

    #: The most that was ever waiting for the consumer (in ``weight`` units).
    peak: int = 0
    #: Seconds the source spent paused because the buffer was full.
    paused: float = 0.0
    #: Everything read from the source (in ``weight`` units).
    total: int = 0


class _Buffer(Generic[T]):
    """The pump's side and the consumer's side of one bounded buffer."""

    __slots__ = ("end", "items", "space", "waiter", "weight")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.weight = 0
        self.end: BaseException | None = None  # _DONE, or the source's exception
        self.waiter: asyncio.Future[None] | None = None  # the consumer waits for items
        self.space: asyncio.Future[None] | None = None  # the pump waits for room

    def wake_consumer(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wake_pump(self) -> None:
        if self.space is not None and not self.space.done():
            self.space.set_result(None)


class _Done(Exception):
    """Marks a source that ended normally."""


_DONE = _Done()


def _unit(_: object) -> int:
    return 1


async def coalesce(
    source: AsyncGenerator[T, None],
    *,
    limit: int | None = None,
    weight: Callable[[T], int] = _unit,
    pause_budget: float | None = None,
    stats: BufferStats | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[list[T], None]:
    """Yield non-empty lists of ``source``'s items; re-raise its exception after
    yielding what came before it.

    ``limit``: the most (by ``weight``) that may wait for the consumer before
    the pump pauses the source (``None``: unbounded). ``pause_budget``: seconds
    of pausing after which the source is closed and :exc:`ConsumerTooSlow`
    raised (``None``: pause for as long as it takes)."""
    loop = asyncio.get_running_loop()
    buf: _Buffer[T] = _Buffer()
    st = stats if stats is not None else BufferStats()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                taken = 0
                async for item in items:
                    taken += 1
                    if taken == PUMP_STEP:
                        taken = 0
                        await asyncio.sleep(0)  # the others' turn (see the module docstring)
                    buf.items.append(item)
                    w = weight(item)
                    buf.weight += w
                    st.total += w
                    if buf.weight > st.peak:
                        st.peak = buf.weight
                    buf.wake_consumer()
                    if limit is not None and buf.weight > limit:
                        # Backpressure: read nothing more until the consumer
                        # has taken what is waiting.
                        started = clock()
                        buf.space = loop.create_future()
                        try:
                            if pause_budget is None:
                                await buf.space
                            else:
                                left = pause_budget - st.paused
                                with contextlib.suppress(TimeoutError):
                                    async with asyncio.timeout(max(left, 0.0)):
                                        await buf.space
                        finally:
                            buf.space = None
                            st.paused += clock() - started
                        if buf.weight > limit:  # still full: the budget is spent
                            buf.end = ConsumerTooSlow(
                                f"source paused for {st.paused:.1f} s: the consumer is too slow")
                            return  # leaving the block closes the source
        except Exception as exc:  # handed to the consumer, raised there
            buf.end = exc
        else:
            if buf.end is None:
                buf.end = _DONE
        finally:
            buf.wake_consumer()

    task = asyncio.create_task(pump())
    try:
        while True:
            if not buf.items:
                if buf.end is not None:
                    if buf.end is _DONE:
                        return
                    raise buf.end
                buf.waiter = loop.create_future()
                try:
                    await buf.waiter
                finally:
                    buf.waiter = None
                continue
            batch = list(buf.items)
            buf.items.clear()
            buf.weight = 0
            buf.wake_pump()
            yield batch
    finally:
        if not task.done():
            task.cancel()
        # Wait for the pump to close the source; asyncio.wait never raises
        # the pump's own CancelledError into us.
        await asyncio.wait([task])
