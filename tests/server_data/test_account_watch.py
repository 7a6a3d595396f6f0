"""Store.password_generations and chat_server.accounts.AccountWatch on each
engine: which logged-in sessions must end (account disabled or removed, or
password changed since they logged in), in batches, and nothing asked of the
store while nobody is logged in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from chat_server.accounts import AccountWatch, Login
from chat_server.stop import StopReason
from chat_server.store import Store, StoreError, open_store

pytestmark = pytest.mark.anyio


async def test_password_generations_leave_out_the_disabled_and_the_missing(store: Store) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        await store.add_user(name, "h")
    await store.set_disabled("bob", True)
    await store.remove_user("carol")
    await store.change_password("dave", "h2")
    assert await store.password_generations(["alice", "bob", "carol", "ghost", "alice", "dave"]) == {
        "alice": 0, "dave": 1}
    assert await store.password_generations([]) == {}
    await store.set_disabled("bob", False)
    assert await store.password_generations(["alice", "bob"]) == {"alice": 0, "bob": 0}


async def test_password_generations_beyond_one_batch(store: Store) -> None:
    names = [f"user{i:04d}" for i in range(1203)]  # three batches of at most 500
    for name in names:
        await store.add_user(name, "h")
    disabled = {names[0], names[499], names[500], names[1202]}
    for name in disabled:
        await store.set_disabled(name, True)
    changed = {names[1], names[501], names[1201]}
    for name in changed:
        await store.change_password(name, "h2")
    missing = {"zz-gone-1", "aa-gone-2"}
    current = await store.password_generations([*names, *missing])
    assert set(current) == set(names) - disabled
    assert {name for name, generation in current.items() if generation == 1} == changed


class Sessions:
    """The server side AccountWatch talks to: who is logged in, ending them."""

    def __init__(self, *logins: str | Login) -> None:
        self.logins: list[Login] = [
            (login, 0) if isinstance(login, str) else login for login in logins]
        self.ended: list[tuple[set[Login], StopReason]] = []

    @property
    def users(self) -> list[str]:
        return [user for user, _ in self.logins]

    def logged_in(self) -> list[Login]:
        return list(self.logins)

    async def end(self, logins: set[Login], why: StopReason) -> int:
        self.ended.append((set(logins), why))
        before = len(self.logins)
        self.logins = [login for login in self.logins if login not in logins]
        return before - len(self.logins)


async def test_tick_ends_exactly_the_sessions_of_inactive_accounts(store: Store) -> None:
    for name in ("alice", "bob", "carol"):
        await store.add_user(name, "h")
    sessions = Sessions("alice", "alice", "bob", "carol")
    watch = AccountWatch(store, 1.0, logged_in=sessions.logged_in, end=sessions.end)
    assert await watch.tick() == set() and sessions.ended == []
    await store.set_disabled("alice", True)
    await store.remove_user("carol")
    assert await watch.tick() == {"alice", "carol"}
    assert sessions.ended == [({("alice", 0), ("carol", 0)}, StopReason.ACCOUNT_ENDED)]
    assert sessions.users == ["bob"]
    assert await watch.tick() == set()  # nothing twice


async def test_tick_ends_the_sessions_logged_in_before_a_password_change(store: Store) -> None:
    for name in ("alice", "bob"):
        await store.add_user(name, "h")
    sessions = Sessions("alice", "alice", "bob")
    watch = AccountWatch(store, 1.0, logged_in=sessions.logged_in, end=sessions.end)
    await store.change_password("alice", "h2")
    # Logged in with the new password before the tick: that session stays.
    sessions.logins.append(("alice", 1))
    assert await watch.tick() == {"alice"}
    assert sessions.ended == [({("alice", 0)}, StopReason.PASSWORD_CHANGED)]
    assert sessions.logins == [("bob", 0), ("alice", 1)]
    assert await watch.tick() == set()
    # Changed again and disabled: the account's state decides the reason.
    await store.change_password("alice", "h3")
    await store.set_disabled("alice", True)
    assert await watch.tick() == {"alice"}
    assert sessions.ended[-1] == ({("alice", 1)}, StopReason.ACCOUNT_ENDED)
    assert sessions.users == ["bob"]


async def test_a_session_that_logs_in_during_the_tick_is_not_ended(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.change_password("alice", "h2")
    sessions = Sessions(("alice", 0))
    reads = 0

    def logged_in() -> list[Login]:
        # The second read (after the store's answer) finds a newer login: one
        # made with a password changed after the store was read.
        nonlocal reads
        reads += 1
        if reads == 2:
            sessions.logins.append(("alice", 2))
        return sessions.logged_in()

    watch = AccountWatch(store, 1.0, logged_in=logged_in, end=sessions.end)
    assert await watch.tick() == {"alice"}
    assert sessions.logins == [("alice", 2)]


async def test_nobody_logged_in_asks_nothing_of_the_store(store_target: str) -> None:
    # A closed store raises on any query: the tick must not make one.
    store = await open_store(store_target)
    await store.close()
    sessions = Sessions()
    watch = AccountWatch(store, 1.0, logged_in=sessions.logged_in, end=sessions.end)
    assert await watch.tick() == set()
    sessions.logins.append(("alice", 0))
    with pytest.raises(StoreError):
        await watch.tick()


async def test_a_failing_store_is_logged_once_and_the_watch_goes_on(
        store_target: str, caplog: pytest.LogCaptureFixture) -> None:
    store = await open_store(store_target)
    await store.close()
    calls = 0

    def logged_in() -> list[Login]:
        nonlocal calls
        calls += 1
        return [("alice", 0)]

    async def end(logins: set[Login], why: StopReason) -> int:
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

    async def end(logins: set[Login], why: StopReason) -> int:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("a bug in ending sessions")

    watch = AccountWatch(store, 0.01, logged_in=lambda: [("alice", 0)], end=end)
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
