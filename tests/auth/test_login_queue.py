"""LoginQueue: the hashing slots go to known logins first, then to each
client address in turn; a waiter that gives up holds nothing, and a slot it
was handed is passed on. (The live attack is tests/hostile/test_login_flood.py.)"""

from __future__ import annotations

import asyncio

import pytest
from chat_server.login_queue import LoginQueue

pytestmark = pytest.mark.anyio


async def _served_order(queue: LoginQueue, waiters: list[tuple[str, str, bool]]) -> list[str]:
    """Hold every slot, queue ``(name, address, known)`` in order, then free
    one slot at a time: the names in the order they got it."""
    for _ in range(queue.slots):
        await queue.acquire("holder")
    order: list[str] = []

    async def wait(name: str, address: str, known: bool) -> None:
        await queue.acquire(address, known=known)
        order.append(name)

    tasks = []
    for name, address, known in waiters:
        tasks.append(asyncio.create_task(wait(name, address, known)))
        await asyncio.sleep(0)  # queued in this order
    await asyncio.sleep(0)
    for _ in waiters:
        queue.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return order


async def test_a_flood_from_one_address_lets_every_other_address_in_between() -> None:
    queue = LoginQueue(1)
    flood = [(f"x{n}", "10.0.0.1", False) for n in range(5)]
    others = [("owner", "192.0.2.7", False), ("other", "198.51.100.9", False)]
    order = await _served_order(queue, [*flood, *others, ("x5", "10.0.0.1", False)])
    assert order == ["x0", "owner", "other", "x1", "x2", "x3", "x4", "x5"]


async def test_many_addresses_each_get_one_turn_a_round() -> None:
    queue = LoginQueue(2)
    waiters = [(f"{a}{n}", a, False) for n in range(3) for a in "abc"]
    waiters = sorted(waiters, key=lambda w: w[0])  # a0 a1 a2 b0 b1 ... : all of a first
    order = await _served_order(queue, [*waiters, ("d0", "d", False)])
    assert order == ["a0", "b0", "c0", "d0", "a1", "b1", "c1", "a2", "b2", "c2"]


async def test_a_known_login_goes_before_every_other_waiter() -> None:
    queue = LoginQueue(1)
    waiters = [(f"x{n}", f"10.0.0.{n}", False) for n in range(4)]
    order = await _served_order(queue, [*waiters, ("owner", "192.0.2.7", True),
                                        ("owner2", "10.0.0.1", True)])
    assert order == ["owner", "owner2", "x0", "x1", "x2", "x3"]


async def test_never_more_holders_than_slots() -> None:
    queue = LoginQueue(3)
    holding = peak = 0

    async def login(address: str) -> None:
        nonlocal holding, peak
        await queue.acquire(address, known=address.endswith("7"))
        holding += 1
        peak = max(peak, holding)
        await asyncio.sleep(0.001)
        holding -= 1
        queue.release()

    await asyncio.gather(*(login(f"10.0.{n % 5}.{n % 9}") for n in range(200)))
    assert peak == 3 and holding == 0 and queue.waiting == 0
    for _ in range(3):  # every slot is free again, at once
        await asyncio.wait_for(queue.acquire("x"), 1)


async def test_a_login_that_gives_up_while_waiting_holds_nothing() -> None:
    queue = LoginQueue(1)
    await queue.acquire("holder")
    gone = asyncio.create_task(queue.acquire("10.0.0.1"))
    gone_known = asyncio.create_task(queue.acquire("10.0.0.2", known=True))
    stays = asyncio.create_task(queue.acquire("10.0.0.3"))
    await asyncio.sleep(0)
    assert queue.waiting == 3
    gone.cancel()
    gone_known.cancel()
    await asyncio.sleep(0)
    assert queue.waiting == 1
    queue.release()
    await asyncio.wait_for(stays, 1)  # the slot went to the one still waiting


async def test_a_slot_handed_to_a_login_that_gave_up_is_passed_on() -> None:
    queue = LoginQueue(1)
    await queue.acquire("holder")
    first = asyncio.create_task(queue.acquire("10.0.0.1"))
    second = asyncio.create_task(queue.acquire("10.0.0.2"))
    await asyncio.sleep(0)
    queue.release()  # handed to `first` ...
    first.cancel()  # ... which is cancelled before it resumes
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    queue.release()
    await asyncio.wait_for(queue.acquire("x"), 1)  # and back to one free slot


def test_a_queue_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        LoginQueue(0)
