"""Fair scheduling of model generations across users.

The model can only run a few generations at once (``max_parallel``).
Requests that have to wait are not served first come, first served: that
would let one user's burst starve everyone behind it. Instead the waiting
requests are kept in one queue per user, and the users with waiting requests
form a round-robin *rotation*. Each free slot goes to the oldest waiting
request of the user at the front of the rotation, and that user then moves to
the back (or leaves the rotation when it has nothing left waiting). A user
that starts waiting joins at the back.

With one waiting request per user (what the server enforces) this is plain
FIFO; with bursts it interleaves users. Example, ``max_parallel=2``: user A
asks 50 times, then users B..K ask once each. A's first two run at once, A is
alone in the rotation so its 3rd gets the next free slot, then B..K, then A's
4th.

``on_position(n)`` reports a waiter's place in line (1 = next), computed by
playing the rotation forward over the requests waiting now. It is called
from the waiter's own task, when it starts waiting and whenever the number
changed since the last report; changes that happen while an (async) callback
runs are coalesced into one report. A waiter's number only ever goes down
through grants and cancellations; it can go up when a newer request is
entitled to run first (another user joins the rotation ahead of this
request's round, or the same user's earlier requests are ahead of it).

Cancellation: a request cancelled while waiting leaves its queue and the
others' positions are recomputed; a slot granted to a task that is cancelled
before it resumed is passed on; a holder leaving the ``async with`` for any
reason releases its slot. All bookkeeping happens synchronously between
awaits, so there is no interleaving in which a slot leaks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["FairScheduler", "PositionCallback", "SchedulerClosed"]

PositionCallback = Callable[[int], Awaitable[None] | None]


class SchedulerClosed(Exception):
    """The scheduler no longer accepts requests (the server is shutting down)."""


class _Waiter:
    """One queued request. Owned by the task that waits in ``slot()``."""

    __slots__ = ("granted", "position", "queued", "rejected", "user", "wake")

    def __init__(self, user: str) -> None:
        self.user = user
        self.queued = True  # still in its user's queue
        self.granted = False  # a slot is reserved for it (counted in in_flight)
        self.rejected = False  # close() turned it away
        self.position = 0  # 1-based place in line, kept current by _reposition()
        # Set whenever the owner has something to look at: grant, rejection,
        # or a new position.
        self.wake = asyncio.Event()


class FairScheduler:
    """At most ``max_parallel`` concurrent holders; waiters served round-robin per user."""

    def __init__(self, max_parallel: int) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
        self._max_parallel = max_parallel
        self._in_flight = 0
        self._waiting = 0
        self._queues: dict[str, deque[_Waiter]] = {}
        self._rotation: deque[str] = deque()  # users with waiting requests, next first
        self._accepting = True
        self._idle = asyncio.Event()  # in_flight == 0 and nothing waiting
        self._idle.set()

    # -- introspection ---------------------------------------------------

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def in_flight(self) -> int:
        """Slots currently held (or granted to a task that has not resumed yet)."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests queued for a slot, over all users."""
        return self._waiting

    def waiting_for(self, user: str) -> int:
        """Requests of ``user`` queued for a slot."""
        queue = self._queues.get(user)
        return len(queue) if queue is not None else 0

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- the public API --------------------------------------------------

    @asynccontextmanager
    async def slot(
        self, user: str, on_position: PositionCallback | None = None
    ) -> AsyncIterator[None]:
        """Hold one generation slot for the body of the ``async with``.

        Raises SchedulerClosed if the scheduler stopped accepting requests, or
        if close() rejected this request while it waited.
        """
        await self._acquire(user, on_position)
        try:
            yield
        finally:
            self._release()

    def stop_accepting(self) -> None:
        """New slot() calls raise SchedulerClosed; queued requests still get served."""
        self._accepting = False

    def close(self) -> None:
        """Stop accepting and turn away every queued request with SchedulerClosed.

        Holders keep their slots; ``await drain()`` to wait for them.
        """
        self._accepting = False
        for queue in self._queues.values():
            for waiter in queue:
                waiter.queued = False
                waiter.rejected = True
                waiter.wake.set()
        self._queues.clear()
        self._rotation.clear()
        self._waiting = 0
        self._update_idle()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no slot is held and nothing waits. False if ``timeout`` ran out."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- internals -------------------------------------------------------

    async def _acquire(self, user: str, on_position: PositionCallback | None) -> None:
        if not self._accepting:
            raise SchedulerClosed("the server is not accepting new requests")
        # Nothing queued means nobody to be fair to: take a free slot directly,
        # without any position notice.
        if self._in_flight < self._max_parallel and not self._rotation:
            self._in_flight += 1
            self._idle.clear()
            return

        waiter = _Waiter(user)
        self._enqueue(waiter)
        reported = 0
        try:
            while True:
                if waiter.granted:
                    return
                if waiter.rejected:
                    raise SchedulerClosed("the server is shutting down")
                # Clear before looking at the position so a change made from
                # here on (even during the callback) wakes us up again.
                waiter.wake.clear()
                if on_position is not None and waiter.position != reported:
                    reported = waiter.position
                    result = on_position(reported)
                    if inspect.isawaitable(result):
                        await result
                    continue  # the queue may have moved while the callback ran
                await waiter.wake.wait()
        except BaseException:
            # Cancelled, or the callback failed. If a slot was already granted
            # to us it is ours to give back; otherwise just leave the queue.
            if waiter.granted:
                self._release()
            else:
                self._discard(waiter)
            raise

    def _release(self) -> None:
        self._in_flight -= 1
        self._dispatch()

    def _enqueue(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.user)
        if queue is None:
            queue = self._queues[waiter.user] = deque()
            self._rotation.append(waiter.user)
        queue.append(waiter)
        self._waiting += 1
        self._idle.clear()
        self._reposition()

    def _discard(self, waiter: _Waiter) -> None:
        if not waiter.queued:
            return
        waiter.queued = False
        queue = self._queues[waiter.user]
        queue.remove(waiter)
        if not queue:
            del self._queues[waiter.user]
            self._rotation.remove(waiter.user)
        self._waiting -= 1
        self._reposition()
        self._update_idle()

    def _dispatch(self) -> None:
        """Hand free slots to waiters, round-robin over the rotation."""
        granted = False
        while self._in_flight < self._max_parallel and self._rotation:
            user = self._rotation.popleft()
            queue = self._queues[user]
            waiter = queue.popleft()
            if queue:
                self._rotation.append(user)  # served: to the back of the rotation
            else:
                del self._queues[user]
            waiter.queued = False
            waiter.granted = True
            waiter.wake.set()
            self._waiting -= 1
            self._in_flight += 1
            granted = True
        if granted:
            self._reposition()
        self._update_idle()

    def _reposition(self) -> None:
        """Recompute every waiter's place in line; wake those whose place changed.

        The service order is round k = 0, 1, ...: for each user in rotation
        order, that user's k-th oldest waiting request. O(waiters) per call.
        """
        position = 0
        users = [self._queues[user] for user in self._rotation]
        k = 0
        while users:
            still: list[deque[_Waiter]] = []
            for queue in users:
                position += 1
                waiter = queue[k]
                if waiter.position != position:
                    waiter.position = position
                    waiter.wake.set()
                if k + 1 < len(queue):
                    still.append(queue)
            users = still
            k += 1

    def _update_idle(self) -> None:
        if self._in_flight == 0 and self._waiting == 0:
            self._idle.set()
        else:
            self._idle.clear()
