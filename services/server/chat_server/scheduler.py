"""Fair scheduling of model generations across users, over a pool of backends.

Each *resource* (a model backend) runs at most ``capacity`` generations at
once and serves a set of models; it can be healthy or not. A request asks for
a model and is granted a slot on one healthy resource that serves it: the one
with the fewest generations in flight relative to its capacity (ties: the one
granted least recently), so load spreads over the pool.

Requests that have to wait are not served first come, first served: that
would let one user's burst starve everyone behind it. Instead the waiting
requests are kept in one queue per user, and the users with waiting requests
form a round-robin *rotation*. When a slot frees, the rotation is walked from
the front: the first user whose oldest waiting request can use a free slot
gets it and moves to the back (or leaves the rotation when it has nothing
left waiting). A user that starts waiting joins at the back. With a single
model (or models that share every backend) this is exactly round-robin; a
user whose model has no free slot keeps its place at the front while others
whose models do are served.

With one waiting request per user (what the server enforces) this is plain
FIFO; with bursts it interleaves users. Example, capacity 2: user A asks 50
times, then users B..K ask once each. A's first two run at once, A is alone
in the rotation so its 3rd gets the next free slot, then B..K, then A's 4th.

*Urgent* requests (a retry after a backend failed before the first token:
the request already waited its turn) are served before the rotation, first
come, first served. A request can exclude resources (those that already
failed it).

``on_position(n)`` reports a waiter's place in line (1 = next), computed by
playing the service order forward over the requests waiting now and counting
only those that compete with it (their models share a resource). It is called
from the waiter's own task, when it starts waiting and whenever the number
changed since the last report; changes that happen while an (async) callback
runs are coalesced into one report. A waiter's number only ever goes down
through grants and cancellations; it can go up when a newer request is
entitled to run first (another user joins the rotation ahead of this
request's round, or the same user's earlier requests are ahead of it).

No capacity: a request for a model that no healthy resource serves (after
exclusions) raises :class:`NoCapacity` at once, and a waiter whose model loses
its last healthy resource is woken with it. Resources that merely are busy do
not count as missing.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = [
    "FairScheduler",
    "Grant",
    "NoCapacity",
    "PositionCallback",
    "SchedulerClosed",
    "UserLine",
]

PositionCallback = Callable[[int], Awaitable[None] | None]

#: The resource of a scheduler built with ``FairScheduler(max_parallel)``.
DEFAULT_RESOURCE = "default"


class SchedulerClosed(Exception):
    """The scheduler no longer accepts requests (the server is shutting down)."""


class NoCapacity(Exception):
    """No healthy resource serves the requested model (after exclusions)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``slot()`` yields: the resource the slot was granted on."""

    resource: str


class _Resource:
    __slots__ = ("capacity", "healthy", "in_flight", "last_grant", "name", "serves")

    def __init__(self, name: str, capacity: int, serves: frozenset[str] | None,
                 healthy: bool) -> None:
        self.name = name
        self.capacity = capacity
        self.serves = serves  # None: any model
        self.healthy = healthy
        self.in_flight = 0
        self.last_grant = 0  # grant sequence number, for least-recently-granted ties

    def can_serve(self, model: str | None) -> bool:
        return self.serves is None or (model is not None and model in self.serves)


class _Waiter:
    """One queued request. Owned by the task that waits in ``slot()``."""

    __slots__ = ("exclude", "granted", "model", "position", "queued", "rejected", "urgent",
                 "user", "wake")

    def __init__(self, user: str, model: str | None, exclude: frozenset[str],
                 urgent: bool) -> None:
        self.user = user
        self.model = model
        self.exclude = exclude
        self.urgent = urgent
        self.queued = True  # still in its queue
        self.granted: _Resource | None = None  # the slot reserved for it (counted in in_flight)
        self.rejected: Exception | None = None  # close() or lost capacity turned it away
        self.position = 0  # 1-based place in line, kept current by _reposition()
        # Set whenever the owner has something to look at: grant, rejection,
        # or a new position.
        self.wake = asyncio.Event()


class FairScheduler:
    """Slots on a pool of resources; waiters served round-robin per user.

    ``FairScheduler(n)`` is a pool of one resource named ``"default"`` with
    capacity ``n`` serving every model; ``FairScheduler()`` starts empty (add
    resources with :meth:`set_resource`).
    """

    def __init__(self, max_parallel: int | None = None) -> None:
        self._resources: dict[str, _Resource] = {}
        self._in_flight = 0
        self._waiting = 0
        self._queues: dict[str, deque[_Waiter]] = {}
        self._rotation: deque[str] = deque()  # users with waiting requests, next first
        self._urgent: deque[_Waiter] = deque()
        self._grants = 0
        self._accepting = True
        self._idle = asyncio.Event()  # in_flight == 0 and nothing waiting
        self._idle.set()
        if max_parallel is not None:
            self.set_resource(DEFAULT_RESOURCE, max_parallel)

    # -- resources -------------------------------------------------------

    def set_resource(self, name: str, capacity: int, *, serves: Collection[str] | None = None,
                     healthy: bool = True) -> None:
        """Add or update a resource. ``serves=None``: every model.

        Slots held on it stay held until released. Waiters whose model has no
        healthy resource left are rejected with NoCapacity.
        """
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        served = None if serves is None else frozenset(serves)
        res = self._resources.get(name)
        if res is None:
            self._resources[name] = _Resource(name, capacity, served, healthy)
        else:
            res.capacity, res.serves, res.healthy = capacity, served, healthy
        self._reject_unservable()
        self._dispatch()
        self._reposition()

    def capacity(self, model: str | None = None, exclude: Collection[str] = ()) -> int:
        """Slots of the healthy resources that serve ``model`` (busy or not)."""
        return sum(r.capacity for r in self._eligible(model, exclude))

    def in_flight_on(self, name: str) -> int:
        res = self._resources.get(name)
        return 0 if res is None else res.in_flight

    def _eligible(self, model: str | None, exclude: Collection[str]) -> list[_Resource]:
        return [r for r in self._resources.values()
                if r.healthy and r.can_serve(model) and r.name not in exclude]

    # -- introspection ---------------------------------------------------

    @property
    def max_parallel(self) -> int:
        """Slots of all healthy resources."""
        return sum(r.capacity for r in self._resources.values() if r.healthy)

    @property
    def in_flight(self) -> int:
        """Slots currently held (or granted to a task that has not resumed yet)."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests queued for a slot, over all users."""
        return self._waiting

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- the public API --------------------------------------------------

    @asynccontextmanager
    async def slot(
        self, user: str, on_position: PositionCallback | None = None, *,
        model: str | None = None, exclude: Collection[str] = (), urgent: bool = False,
    ) -> AsyncIterator[Grant]:
        """Hold one generation slot for the body of the ``async with``.

        Yields the Grant (which resource). Raises SchedulerClosed if the
        scheduler stopped accepting requests or close() rejected this request
        while it waited; NoCapacity if no healthy resource serves ``model``.
        """
        res = await self._acquire(user, on_position, model, frozenset(exclude), urgent)
        try:
            yield Grant(res.name)
        finally:
            self._release(res)

    def stop_accepting(self) -> None:
        """New slot() calls raise SchedulerClosed; queued requests still get served."""
        self._accepting = False

    def close(self) -> None:
        """Stop accepting and turn away every queued request with SchedulerClosed.

        Holders keep their slots; ``await drain()`` to wait for them.
        """
        self._accepting = False
        for waiter in self._all_waiters():
            self._reject(waiter, SchedulerClosed("the server is shutting down"))
        self._queues.clear()
        self._rotation.clear()
        self._urgent.clear()
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

    def _pick(self, waiter: _Waiter) -> _Resource | None:
        """The least-loaded healthy resource with a free slot for this waiter."""
        best: _Resource | None = None
        best_key: tuple[float, int] = (2.0, 0)
        for r in self._resources.values():
            if (r.healthy and r.in_flight < r.capacity and r.can_serve(waiter.model)
                    and r.name not in waiter.exclude):
                key = (r.in_flight / r.capacity, r.last_grant)
                if best is None or key < best_key:
                    best, best_key = r, key
        return best

    def _take(self, res: _Resource) -> None:
        self._grants += 1
        res.last_grant = self._grants
        res.in_flight += 1
        self._in_flight += 1
        self._idle.clear()

    async def _acquire(self, user: str, on_position: PositionCallback | None,
                       model: str | None, exclude: frozenset[str], urgent: bool) -> _Resource:
        if not self._accepting:
            raise SchedulerClosed("the server is not accepting new requests")
        if not self._eligible(model, exclude):
            raise NoCapacity(f"no healthy backend serves model {model!r}")
        waiter = _Waiter(user, model, exclude, urgent)
        # Nothing queued means nobody to be fair to: take a free slot directly,
        # without any position notice.
        if not self._rotation and not self._urgent and (res := self._pick(waiter)) is not None:
            self._take(res)
            return res

        self._enqueue(waiter)
        self._dispatch()
        reported = 0
        try:
            while True:
                if waiter.granted is not None:
                    return waiter.granted
                if waiter.rejected is not None:
                    raise waiter.rejected
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
            if waiter.granted is not None:
                self._release(waiter.granted)
            else:
                self._discard(waiter)
            raise

    def _release(self, res: _Resource) -> None:
        res.in_flight -= 1
        self._in_flight -= 1
        self._dispatch()

    def _all_waiters(self) -> list[_Waiter]:
        return [*self._urgent, *(w for q in self._queues.values() for w in q)]

    def _enqueue(self, waiter: _Waiter) -> None:
        if waiter.urgent:
            self._urgent.append(waiter)
        else:
            queue = self._queues.get(waiter.user)
            if queue is None:
                queue = self._queues[waiter.user] = deque()
                self._rotation.append(waiter.user)
            queue.append(waiter)
        self._waiting += 1
        self._idle.clear()
        self._reposition()

    def _unlink(self, waiter: _Waiter) -> None:
        """Take a queued waiter out of its queue (no repositioning)."""
        waiter.queued = False
        if waiter.urgent:
            self._urgent.remove(waiter)
        else:
            queue = self._queues[waiter.user]
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.user]
                self._rotation.remove(waiter.user)
        self._waiting -= 1

    def _discard(self, waiter: _Waiter) -> None:
        if not waiter.queued:
            return
        self._unlink(waiter)
        # The user's next request may be for a model that has a free slot.
        self._dispatch()
        self._reposition()
        self._update_idle()

    def _reject(self, waiter: _Waiter, exc: Exception) -> None:
        waiter.queued = False
        waiter.rejected = exc
        waiter.wake.set()

    def _reject_unservable(self) -> None:
        for waiter in self._all_waiters():
            if not self._eligible(waiter.model, waiter.exclude):
                self._unlink(waiter)
                self._reject(waiter, NoCapacity(
                    f"no healthy backend serves model {waiter.model!r} any more"))
        self._update_idle()

    def _grant(self, waiter: _Waiter, res: _Resource) -> None:
        waiter.queued = False
        waiter.granted = res
        waiter.wake.set()
        self._waiting -= 1
        self._take(res)

    def _dispatch(self) -> None:
        """Hand free slots to waiters: urgent ones first, then round-robin over users."""
        granted = False
        for waiter in list(self._urgent):
            if (res := self._pick(waiter)) is not None:
                self._urgent.remove(waiter)
                self._grant(waiter, res)
                granted = True
        # Walk the rotation from the front; a user whose oldest request can't be
        # served now keeps its place. ``blocked`` caches what a pass found full.
        progress = True
        while progress and self._rotation and self._has_free_slot():
            progress = False
            blocked: set[tuple[str | None, frozenset[str]]] = set()
            for user in self._rotation:
                waiter = self._queues[user][0]
                key = (waiter.model, waiter.exclude)
                if key in blocked:
                    continue
                res = self._pick(waiter)
                if res is None:
                    blocked.add(key)
                    continue
                queue = self._queues[user]
                queue.popleft()
                self._rotation.remove(user)
                if queue:
                    self._rotation.append(user)  # served: to the back of the rotation
                else:
                    del self._queues[user]
                self._grant(waiter, res)
                granted = progress = True
                break
        if granted:
            self._reposition()
        self._update_idle()

    def _has_free_slot(self) -> bool:
        return any(r.healthy and r.in_flight < r.capacity for r in self._resources.values())

    def _reposition(self) -> None:
        """Recompute every waiter's place in line; wake those whose place changed.

        The service order is the urgent queue, then round k = 0, 1, ...: for
        each user in rotation order, that user's k-th oldest waiting request.
        A waiter's place counts only the requests before it whose models share
        a resource with its model. O(waiters x distinct models).
        """
        order: list[_Waiter] = list(self._urgent)
        users = [self._queues[user] for user in self._rotation]
        k = 0
        while users:
            still: list[deque[_Waiter]] = []
            for queue in users:
                order.append(queue[k])
                if k + 1 < len(queue):
                    still.append(queue)
            users = still
            k += 1
        models = {w.model for w in order}
        if len(models) == 1:
            for position, waiter in enumerate(order, 1):
                self._set_position(waiter, position)
            return
        compete = {m: [n for n in models if self._share(m, n)] for m in models}
        seen = dict.fromkeys(models, 0)
        for waiter in order:
            seen[waiter.model] += 1
            self._set_position(waiter, sum(seen[n] for n in compete[waiter.model]))

    def _share(self, a: str | None, b: str | None) -> bool:
        """Whether requests for models a and b can compete for one resource."""
        if a == b:
            return True
        return any(r.can_serve(a) and r.can_serve(b) for r in self._resources.values())

    @staticmethod
    def _set_position(waiter: _Waiter, position: int) -> None:
        if waiter.position != position:
            waiter.position = position
            waiter.wake.set()

    def _update_idle(self) -> None:
        if self._in_flight == 0 and self._waiting == 0:
            self._idle.set()
        else:
            self._idle.clear()


async def _report(on_position: PositionCallback | None, position: int) -> None:
    if on_position is not None:
        result = on_position(position)
        if inspect.isawaitable(result):
            await result


class UserLine:
    """At most one answer per user at a time, across all of the user's sessions.

    The user's answers wait in line, first come first served, so a
    conversation's turns are generated and stored in order. ``on_position(n)``
    tells a waiter how many of the user's answers are ahead of it (1 = next),
    when it starts waiting and whenever that number changes. A waiter that is
    cancelled leaves the line; the holder leaving the ``async with`` for any
    reason lets the next one go.
    """

    def __init__(self) -> None:
        self._lines: dict[str, deque[asyncio.Event]] = {}

    def busy(self, user: str) -> bool:
        """An answer of ``user`` is running or waiting."""
        return user in self._lines

    @asynccontextmanager
    async def turn(
        self, user: str, on_position: PositionCallback | None = None
    ) -> AsyncIterator[None]:
        line = self._lines.setdefault(user, deque())
        ticket = asyncio.Event()
        line.append(ticket)
        try:
            reported = 0
            while line[0] is not ticket:
                ticket.clear()
                position = line.index(ticket)  # the holder is at 0: 1 means next
                if position != reported:
                    reported = position
                    await _report(on_position, position)
                    continue  # the line may have moved while the callback ran
                await ticket.wait()
            yield
        finally:
            was_head = line[0] is ticket
            line.remove(ticket)
            if not line:
                if self._lines.get(user) is line:
                    del self._lines[user]
            else:
                # Everyone behind the leaver moved up one place.
                start = 0 if was_head else 1
                for waiter in list(line)[start:]:
                    waiter.set()
