"""Test harness: requests as tasks that record what the scheduler did to them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from chat_server.scheduler import FairScheduler, NoCapacity, SchedulerClosed


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run with a generous guard against hangs (not a timing assertion)."""
    return asyncio.run(asyncio.wait_for(coro, 60))


async def settle(rounds: int = 50) -> None:
    """Let every ready task run until the loop is quiet (no timers involved)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Probe:
    """Counts holders inside the ``async with`` and records the grant order."""

    def __init__(self, max_parallel: int) -> None:
        self.max_parallel = max_parallel
        self.active = 0
        self.peak = 0
        self.order: list[Req] = []
        self.holding: list[Req] = []

    def enter(self, req: Req) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        assert self.active <= self.max_parallel, "max_parallel exceeded"
        self.order.append(req)
        self.holding.append(req)

    def exit(self, req: Req) -> None:
        self.active -= 1
        self.holding.remove(req)


class Req:
    """One request: waits for a slot, holds it until ``release`` is set."""

    def __init__(
        self,
        sched: FairScheduler,
        probe: Probe,
        user: str,
        *,
        async_callback: bool = False,
        callback_steps: int = 3,
        model: str | None = None,
        exclude: tuple[str, ...] = (),
        urgent: bool = False,
    ) -> None:
        self.sched = sched
        self.probe = probe
        self.user = user
        self.positions: list[int] = []
        self.release = asyncio.Event()
        self.state = "new"  # new, waiting, holding, done, cancelled, closed, no_capacity
        self.model, self.exclude, self.urgent = model, exclude, urgent
        self.resource: str | None = None  # where the slot was granted
        self.async_callback = async_callback
        self.callback_steps = callback_steps
        self.task = asyncio.create_task(self._run())

    async def _on_position_async(self, n: int) -> None:
        self.positions.append(n)
        for _ in range(self.callback_steps):  # a slow "send notice" coroutine
            await asyncio.sleep(0)

    async def _run(self) -> None:
        self.state = "waiting"
        callback = self._on_position_async if self.async_callback else self.positions.append
        try:
            async with self.sched.slot(self.user, on_position=callback, model=self.model,
                                       exclude=self.exclude, urgent=self.urgent) as grant:
                self.resource = grant.resource
                self.state = "holding"
                self.probe.enter(self)
                try:
                    await self.release.wait()
                finally:
                    self.probe.exit(self)
            self.state = "done"
        except asyncio.CancelledError:
            self.state = "cancelled"
            raise
        except SchedulerClosed:
            self.state = "closed"
        except NoCapacity:
            self.state = "no_capacity"

    def __repr__(self) -> str:
        return f"Req({self.user}, {self.state})"
