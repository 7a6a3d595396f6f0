"""UserLine: one answer per user at a time, the others told their place."""

from __future__ import annotations

import asyncio

from chat_server.scheduler import UserLine

from ._harness import run, settle


class Waiter:
    def __init__(self, line: UserLine, user: str) -> None:
        self.positions: list[int] = []
        self.holding = False
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(line, user))

    async def _run(self, line: UserLine, user: str) -> None:
        async with line.turn(user, self.positions.append):
            self.holding = True
            await self.release.wait()
        self.holding = False


def test_one_holder_per_user_and_the_others_get_their_place() -> None:
    async def main() -> None:
        line = UserLine()
        a, b, c = (Waiter(line, "alice") for _ in range(3))
        other = Waiter(line, "bob")
        await settle()
        assert a.holding and not b.holding and not c.holding
        assert other.holding  # other users are not in alice's line
        assert (a.positions, b.positions, c.positions) == ([], [1], [2])
        a.release.set()
        await settle()
        assert b.holding and c.positions == [2, 1]
        b.release.set()
        await settle()
        assert c.holding
        c.release.set()
        other.release.set()
        await settle()
        assert not line.busy("alice") and not line.busy("bob")

    run(main())


def test_a_cancelled_waiter_leaves_and_those_behind_move_up() -> None:
    async def main() -> None:
        line = UserLine()
        a, b, c = (Waiter(line, "alice") for _ in range(3))
        await settle()
        b.task.cancel()
        await settle()
        assert c.positions == [2, 1] and a.holding
        a.release.set()
        await settle()
        assert c.holding
        c.release.set()
        await settle()
        assert not line.busy("alice")

    run(main())


def test_a_cancelled_holder_lets_the_next_one_go() -> None:
    async def main() -> None:
        line = UserLine()
        a, b = Waiter(line, "alice"), Waiter(line, "alice")
        await settle()
        a.task.cancel()
        await settle()
        assert b.holding and b.positions == [1]
        b.release.set()
        await settle()
        assert not line.busy("alice")

    run(main())
