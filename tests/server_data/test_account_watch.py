"""Store.inactive_users and chat_server.accounts.AccountWatch on each engine:
which logged-in users must lose their sessions, in batches, and nothing asked
of the store while nobody is logged in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from chat_server.accounts import AccountWatch
from chat_server.store import Store, StoreError, open_store

pytestmark = pytest.mark.anyio


async def test_inactive_users_are_the_disabled_and_the_missing(store: Store) -> None:
    for name in ("alice", "bob", "carol"):
        await store.add_user(name, "h")
    await store.set_disabled("bob", True)
    await store.remove_user("carol")
    assert await store.inactive_users(["alice", "bob", "carol", "ghost", "alice"]) == {
        "bob", "carol", "ghost"}
    assert await store.inactive_users([]) == set()
    await store.set_disabled("bob", False)
    assert await store.inactive_users(["alice", "bob"]) == set()


async def test_inactive_users_beyond_one_batch(store: Store) -> None:
    names = [f"user{i:04d}" for i in range(1203)]  # three batches of at most 500
    for name in names:
        await store.add_user(name, "h")
    disabled = {names[0], names[499], names[500], names[1202]}
    for name in disabled:
        await store.set_disabled(name, True)
    missing = {"zz-gone-1", "aa-gone-2"}
    assert await store.inactive_users([*names, *missing]) == disabled | missing


class Sessions:
    """The server side AccountWatch talks to: who is logged in, ending them."""

    def __init__(self, *users: str) -> None:
        self.users = list(users)
        self.ended: list[set[str]] = []

    def logged_in(self) -> list[str]:
        return list(self.users)

    async def end(self, users: set[str]) -> int:
        self.ended.append(set(users))
        before = len(self.users)
        self.users = [u for u in self.users if u not in users]
        return before - len(self.users)


async def test_tick_ends_exactly_the_sessions_of_inactive_accounts(store: Store) -> None:
    for name in ("alice", "bob", "carol"):
        await store.add_user(name, "h")
    sessions = Sessions("alice", "alice", "bob", "carol")
    watch = AccountWatch(store, 1.0, logged_in=sessions.logged_in, end=sessions.end)
    assert await watch.tick() == set() and sessions.ended == []
    await store.set_disabled("alice", True)
    await store.remove_user("carol")
    assert await watch.tick() == {"alice", "carol"}
    assert sessions.ended == [{"alice", "carol"}] and sessions.users == ["bob"]
    assert await watch.tick() == set()  # nothing twice


async def test_nobody_logged_in_asks_nothing_of_the_store(store_target: str) -> None:
    # A closed store raises on any query: the tick must not make one.
    store = await open_store(store_target)
    await store.close()
    sessions = Sessions()
    watch = AccountWatch(store, 1.0, logged_in=sessions.logged_in, end=sessions.end)
    assert await watch.tick() == set()
    sessions.users.append("alice")
    with pytest.raises(StoreError):
        await watch.tick()


async def test_a_failing_store_is_logged_once_and_the_watch_goes_on(
        store_target: str, caplog: pytest.LogCaptureFixture) -> None:
    store = await open_store(store_target)
    await store.close()
    calls = 0

    def logged_in() -> list[str]:
        nonlocal calls
        calls += 1
        return ["alice"]

    async def end(users: set[str]) -> int:
        raise AssertionError("nothing to end while the store fails")

    watch = AccountWatch(store, 0.01, logged_in=logged_in, end=end)
    with caplog.at_level(logging.WARNING, logger="chat_server.accounts"):
        task = asyncio.create_task(watch.run())
        while calls < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    warnings = [r for r in caplog.records if "cannot check the accounts" in r.getMessage()]
    assert len(warnings) == 1


async def test_an_unexpected_error_in_a_tick_is_logged_and_the_watch_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await store.add_user("alice", "h")
    await store.set_disabled("alice", True)
    attempts = 0

    async def end(users: set[str]) -> int:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("a bug in ending sessions")

    watch = AccountWatch(store, 0.01, logged_in=lambda: ["alice"], end=end)
    with caplog.at_level(logging.ERROR, logger="chat_server.accounts"):
        task = asyncio.create_task(watch.run())
        while attempts < 3 and not task.done():
            await asyncio.sleep(0.01)
        assert not task.done(), "the watch ended on the error"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    errors = [r for r in caplog.records if r.getMessage() == "account check failed"]
    assert errors and errors[0].exc_info is not None


def test_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AccountWatch(None, 0, logged_in=list, end=None)  # type: ignore[arg-type]
