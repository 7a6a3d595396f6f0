"""Authenticator: right/wrong/unknown, constant work, throttling, rehash, bounded hashing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from argon2 import PasswordHasher, Type
from chat_server.auth import (
    AccountPolicy,
    Authenticator,
    ThrottlePolicy,
    Verified,
    ensure_bootstrap_user,
)
from chat_server.config import Settings
from chat_server.store import Store, open_store

T = TypeVar("T")


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1, type=Type.ID)


class CountingHasher:
    """Wraps a real argon2 hasher and records what it is asked to do."""

    def __init__(self, inner: PasswordHasher | None = None) -> None:
        self.inner = inner or cheap_hasher()
        self.verified: list[str] = []  # the hashes verify() was called with
        self.hashed = 0
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: threading.Event | None = None  # when set, verify() waits on it

    def hash(self, password: str) -> str:
        self.hashed += 1
        return self.inner.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        with self.lock:
            self.verified.append(hash)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                assert self.gate.wait(timeout=30)
            return self.inner.verify(hash, password)
        finally:
            with self.lock:
                self.in_flight -= 1

    def check_needs_rehash(self, hash: str) -> bool:
        return self.inner.check_needs_rehash(hash)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(_with_timeout(coro))


async def _with_timeout(coro: Awaitable[T]) -> T:
    async with asyncio.timeout(60):
        return await coro


@pytest.fixture
def store(tmp_path: Path):
    s = run(open_store(tmp_path / "chat.db"))
    yield s
    run(s.close())


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


def make_auth(store: Store, hasher: CountingHasher, **kw: Any) -> tuple[Authenticator, FakeClock]:
    clock = FakeClock()
    auth = Authenticator(store, hasher, clock=clock, **kw)
    return auth, clock


def add_user(store: Store, name: str, password: str, hasher: PasswordHasher | None = None) -> None:
    run(store.add_user(name, (hasher or cheap_hasher()).hash(password)))


def stored_hash(store: Store, name: str) -> str | None:
    user = run(store.get_user(name))
    return None if user is None else user.password_hash


# -- right, wrong, unknown -----------------------------------------------------


def test_right_wrong_and_unknown(store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "s3cret pass")
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify("alice", "s3cret pass", "127.0.0.1")) is not None
    assert run(auth.verify("alice", "wrong", "127.0.0.1")) is None
    assert run(auth.verify("bob", "s3cret pass", "127.0.0.1")) is None
    assert run(auth.verify("alice", "", "127.0.0.1")) is None
    assert run(auth.verify("", "", "127.0.0.1")) is None


def test_unknown_user_does_the_same_hashing_work(store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    auth, _ = make_auth(store, hasher)
    alice_hash = stored_hash(store, "alice")
    assert alice_hash is not None

    run(auth.verify("alice", "wrong", None))
    assert hasher.verified == [alice_hash]

    run(auth.verify("nobody", "wrong", None))
    run(auth.verify("nobody2", "wrong", None))
    assert len(hasher.verified) == 3
    # The unknown-user path verified a real argon2id hash with the same
    # parameters as the live hasher, not a shortcut. (Only a name no account
    # can have fails without one: test_impossible_user_name_fails_at_once.)
    dummy_hash = hasher.verified[1]
    assert dummy_hash == hasher.verified[2]
    assert dummy_hash != alice_hash
    assert dummy_hash.split("$")[1:4] == alice_hash.split("$")[1:4]  # argon2id, v, m/t/p


def test_dummy_hash_made_once_with_live_parameters(store: Store, hasher: CountingHasher) -> None:
    auth, _ = make_auth(store, hasher)
    assert hasher.hashed == 1
    for i in range(3):
        run(auth.verify(f"ghost{i}", "pw", None))
    assert hasher.hashed == 1  # no new hashes per attempt


def test_failure_reason_only_in_debug_logs(
    store: Store, hasher: CountingHasher, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(store, "alice", "pw")
    auth, _ = make_auth(store, hasher)

    def messages(user: str) -> tuple[list[str], list[str]]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="chat_server.auth"):
            run(auth.verify(user, "wrong", "10.0.0.1"))
        info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        return info, debug

    wrong_info, wrong_debug = messages("alice")
    unknown_info, unknown_debug = messages("bob")
    assert wrong_info == unknown_info == ["login failed"]
    assert wrong_debug != unknown_debug
    assert "wrong password" in wrong_debug[0] and "unknown user" in unknown_debug[0]


def test_password_never_logged(store: Store, hasher: CountingHasher,
                               caplog: pytest.LogCaptureFixture) -> None:
    add_user(store, "alice", "TopSecret-123")
    auth, _ = make_auth(store, hasher)
    with caplog.at_level(logging.DEBUG):
        run(auth.verify("alice", "TopSecret-123", None))
        run(auth.verify("alice", "TopSecret-124", None))
    assert caplog.records
    for record in caplog.records:
        assert "TopSecret" not in record.getMessage()
        assert "TopSecret" not in str(vars(record))


def test_overlong_password_fails_without_hashing(store: Store, hasher: CountingHasher) -> None:
    long_pw = "p" * 1025
    add_user(store, "alice", "p" * 1024)
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify("alice", long_pw, None)) is None
    assert hasher.verified == []
    assert run(auth.verify("alice", "p" * 1024, None)) is not None


class CountingStore:
    """Counts the store calls a login makes (a thin wrapper: the real store answers)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):
            def counted(*args: Any, **kw: Any) -> Any:
                self.calls.append(name)
                return attr(*args, **kw)
            return counted
        return attr


@pytest.mark.parametrize("name", ["a" * 65, "x" * 4000, "two words", "tab\there", "nul\x00",
                                  "zero\u200bwidth", ""],
                         ids=["65-chars", "4000-chars", "space", "tab", "nul", "format", "empty"])
def test_impossible_user_name_fails_at_once(store: Store, hasher: CountingHasher,
                                            name: str) -> None:
    # A name no account can have (store.validate_username) is neither looked up
    # nor hashed, with a password or a token, and leaves no per-name entry.
    counting = CountingStore(store)
    auth = Authenticator(counting, hasher, clock=FakeClock())  # type: ignore[arg-type]
    assert run(auth.verify(name, "pw", "10.0.0.9")) is None
    assert run(auth.verify_token(name, "t" * 43, "10.0.0.9")) is None
    assert hasher.verified == []
    assert counting.calls == []
    assert len(auth.throttle.pairs) == 0 and len(auth.throttle.accounts) == 0
    assert len(auth.throttle.addresses) == 1  # the address still pays for it


def test_impossible_user_names_count_against_the_address(store: Store,
                                                        hasher: CountingHasher) -> None:
    add_user(store, "victim", "pw")
    auth, _ = make_auth(store, hasher)
    for i in range(10):
        run(auth.verify("junk " * (i + 1), "guess", "192.0.2.9"))
    assert auth.is_throttled("victim", "192.0.2.9") > 0
    assert auth.is_throttled("victim", "192.0.2.10") == 0.0


def test_longest_possible_user_name_is_checked_normally(store: Store,
                                                       hasher: CountingHasher) -> None:
    name = "n" * 64
    add_user(store, name, "pw")
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify(name, "pw", None)) is not None
    assert run(auth.verify(name, "bad", None)) is None


def test_corrupt_stored_hash_is_a_failed_login(store: Store, hasher: CountingHasher) -> None:
    run(store.add_user("alice", "not-a-hash"))
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify("alice", "anything", None)) is None


# -- throttling ----------------------------------------------------------------


def test_guesses_from_one_address_throttle_that_account_at_that_address(
        store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    auth, clock = make_auth(store, hasher)
    for _ in range(2):
        assert run(auth.verify("alice", "bad", "10.0.0.1")) is None
    assert auth.is_throttled("alice", "10.0.0.1") == 0.0
    run(auth.verify("alice", "bad", "10.0.0.1"))  # third failure: backoff starts
    assert auth.is_throttled("alice", "10.0.0.1") == pytest.approx(1.0)
    # Only there: the account from elsewhere, and others from there, are not slowed.
    assert auth.is_throttled("alice", "10.0.0.2") == 0.0
    assert auth.is_throttled("bob", "10.0.0.1") == 0.0

    # While throttled even the right password fails, and nothing is hashed.
    calls = len(hasher.verified)
    assert run(auth.verify("alice", "pw", "10.0.0.1")) is None
    assert len(hasher.verified) == calls

    clock.now += 1.01
    assert auth.is_throttled("alice", "10.0.0.1") == 0.0
    run(auth.verify("alice", "bad", "10.0.0.1"))  # 4th failure: 2 s
    assert auth.is_throttled("alice", "10.0.0.1") == pytest.approx(2.0)
    clock.now += 2.01
    run(auth.verify("alice", "bad", "10.0.0.1"))  # 5th: 4 s
    assert auth.is_throttled("alice", "10.0.0.1") == pytest.approx(4.0)

    clock.now += 4.01
    assert run(auth.verify("alice", "pw", "10.0.0.1")) is not None  # success resets it
    assert auth.is_throttled("alice", "10.0.0.1") == 0.0
    run(auth.verify("alice", "bad", "10.0.0.1"))
    assert auth.is_throttled("alice", "10.0.0.1") == 0.0


def test_lockout_as_a_weapon_guesses_from_one_address_never_lock_out_the_owner(
        store: Store, hasher: CountingHasher) -> None:
    # Issue 10.9: three wrong passwords from anywhere used to lock the account
    # for every address; one guess a minute kept its owner out. Now an attacker
    # at one address, at any rate and for hours, only throttles that address.
    add_user(store, "alice", "pw")
    auth, clock = make_auth(store, hasher)
    attacker, owner = "198.51.100.66", "192.0.2.10"  # the owner never logged in before
    throttled = 0
    for step in range(2000):
        clock.now += (0.01, 0.5, 7, 61)[step % 4]  # bursts and pauses, over hours
        if auth.is_throttled("alice", attacker) > 0:
            throttled += 1
        run(auth.verify("alice", f"guess{step}", attacker))
        assert auth.is_throttled("alice", owner) == 0.0
        if step % 97 == 0:
            assert run(auth.verify("alice", "pw", owner)) is not None
    assert throttled > 500  # the attacker was slowed down all along
    assert auth.is_throttled("alice", attacker) > 0


def test_distributed_guessing_on_one_account_is_slowed_for_the_account(
        store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")

    def hashed_guesses(account_policy: AccountPolicy) -> int:
        auth, clock = make_auth(store, CountingHasher(), account_policy=account_policy)
        hashed = 0
        # 200 addresses, each guessing as fast as it is let through, for 10 minutes.
        addresses = [f"203.0.113.{i}" for i in range(200)]
        for _ in range(600):
            clock.now += 1
            for address in addresses:
                if auth.is_throttled("alice", address) == 0:
                    hashed += 1
                    run(auth.verify("alice", "guess", address))
        return hashed

    loose = hashed_guesses(AccountPolicy())
    off = hashed_guesses(AccountPolicy(threshold=10**9))  # no per-account counter
    # Without it every address gets its own strict allowance: hundreds of guesses.
    assert off > 1000
    # With it the account as a whole is slowed: the addresses add nothing.
    assert loose < 60


def test_a_distributed_attack_does_not_lock_the_owner_out_of_a_known_address(
        store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    auth, clock = make_auth(store, hasher)
    home, new_place = "192.0.2.10", "192.0.2.99"
    assert run(auth.verify("alice", "pw", home)) is not None  # a known address from now on
    for i in range(20):  # five addresses, four guesses each
        run(auth.verify("alice", "guess", f"198.51.100.{i % 5}"))
    assert auth.is_throttled("alice", "198.51.100.200") > 0  # a fresh attacker address
    assert auth.is_throttled("alice", new_place) > 0  # the trade-off: new places wait too
    assert auth.is_throttled("alice", home) == 0.0
    assert run(auth.verify("alice", "pw", home)) is not None
    # The owner's success does not end the attack's slowdown.
    assert auth.is_throttled("alice", "198.51.100.200") > 0
    # A known address is trusted for 30 days.
    clock.now += 31 * 24 * 3600
    for i in range(20):
        run(auth.verify("alice", "guess", f"198.51.100.{i % 5}"))
    assert auth.is_throttled("alice", home) > 0


def test_two_addresses_alone_never_trigger_the_account_counter(
        store: Store, hasher: CountingHasher) -> None:
    auth, clock = make_auth(store, hasher)
    for i in range(200):
        clock.now += 61
        run(auth.verify("alice", "guess", ("198.51.100.1", "198.51.100.2")[i % 2]))
    assert auth.is_throttled("alice", "192.0.2.10") == 0.0


def test_throttling_is_the_same_for_existing_and_unknown_accounts(
        store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    waits: dict[str, list[float]] = {}
    for name in ("alice", "alicf"):
        auth, clock = make_auth(store, hasher)
        waits[name] = []
        for i in range(40):
            clock.now += (0.2, 3)[i % 2]
            run(auth.verify(name, "guess", f"198.51.100.{i % 6}"))
            waits[name].append(auth.is_throttled(name, "192.0.2.10"))
            waits[name].append(auth.is_throttled(name, "198.51.100.1"))
    assert waits["alice"] == waits["alicf"]


def test_backoff_is_capped(store: Store, hasher: CountingHasher) -> None:
    auth, clock = make_auth(store, hasher)
    for _ in range(40):
        clock.now += 61
        run(auth.verify("alice", "bad", None))
    assert auth.is_throttled("alice", None) == pytest.approx(60.0)


def test_failures_expire_after_the_window(store: Store, hasher: CountingHasher) -> None:
    auth, clock = make_auth(store, hasher)
    for _ in range(3):
        run(auth.verify("alice", "bad", None))
    assert auth.is_throttled("alice", None) > 0
    clock.now += 15 * 60 + 1
    assert auth.is_throttled("alice", None) == 0.0
    run(auth.verify("alice", "bad", None))  # counting starts again
    assert auth.is_throttled("alice", None) == 0.0


def test_address_throttle_across_user_names(store: Store, hasher: CountingHasher) -> None:
    # Password spraying: one address, many accounts.
    add_user(store, "victim", "pw")
    auth, _ = make_auth(store, hasher)
    # One address guessing many names (each name stays below its own threshold).
    for i in range(10):
        run(auth.verify(f"user{i}", "guess", ("192.0.2.7", 40000 + i)))
    assert auth.is_throttled("someone", ("192.0.2.7", 50000)) == pytest.approx(1.0)
    assert auth.is_throttled("someone", "192.0.2.7") > 0
    calls = len(hasher.verified)
    assert run(auth.verify("victim", "pw", ("192.0.2.7", 1))) is None
    assert len(hasher.verified) == calls
    # Another address is unaffected, and so is the account itself.
    assert auth.is_throttled("victim", ("192.0.2.8", 1)) == 0.0
    assert run(auth.verify("victim", "pw", ("192.0.2.8", 1))) is not None


def test_ipv6_clients_are_throttled_per_64(store: Store, hasher: CountingHasher) -> None:
    auth, _ = make_auth(store, hasher)
    for i in range(10):
        run(auth.verify(f"u{i}", "guess", (f"2001:db8:1:2::{i + 1}", 1, 0, 0)))
    assert auth.is_throttled("x", "2001:db8:1:2:ffff::1") > 0
    assert auth.is_throttled("x", "2001:db8:1:3::1") == 0.0
    # One account guessed from one /64 is throttled there as one address.
    for i in range(3):
        run(auth.verify("alice", "guess", f"2001:db8:9:9::{i + 1}"))
    assert auth.is_throttled("alice", "2001:db8:9:9::ffff") > 0
    assert auth.is_throttled("alice", "2001:db8:9:a::1") == 0.0


def test_custom_policies(store: Store, hasher: CountingHasher) -> None:
    auth, _ = make_auth(store, hasher, pair_policy=ThrottlePolicy(threshold=1, base_delay=5),
                        address_policy=ThrottlePolicy(threshold=100))
    run(auth.verify("alice", "bad", "10.1.1.1"))
    assert auth.is_throttled("alice", "10.1.1.1") == pytest.approx(5.0)
    assert auth.is_throttled("alice", "10.9.9.9") == 0.0


def test_throttle_tables_are_bounded(store: Store, hasher: CountingHasher) -> None:
    policy = ThrottlePolicy(max_entries=50)
    auth, _ = make_auth(store, hasher, pair_policy=policy, address_policy=policy,
                        account_policy=AccountPolicy(max_entries=50))
    for i in range(200):
        run(auth.verify(f"user{i}", "bad", f"10.0.{i // 250}.{i % 250}"))
        add_user(store, f"ok{i}", "pw")
        run(auth.verify(f"ok{i}", "pw", f"10.1.{i // 250}.{i % 250}"))
    t = auth.throttle
    assert max(len(t.pairs), len(t.addresses), len(t.accounts)) <= 50
    assert t.trusted_accounts <= 50


def test_disabled_user_fails_like_a_wrong_password(store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "right pw")
    run(store.set_disabled("alice", True))
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify("alice", "right pw", None)) is None
    run(auth.verify("nobody", "right pw", None))
    # The same work as for an unknown name: the dummy hash, not alice's.
    assert hasher.verified[0] == hasher.verified[1] != stored_hash(store, "alice")
    run(store.set_disabled("alice", False))
    assert run(auth.verify("alice", "right pw", None)) is not None


def test_successful_login_is_recorded(store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    auth, _ = make_auth(store, hasher)
    run(auth.verify("alice", "wrong", None))
    assert run(store.get_user("alice")).last_login_at is None  # type: ignore[union-attr]
    run(auth.verify("alice", "pw", None))
    assert run(store.get_user("alice")).last_login_at is not None  # type: ignore[union-attr]


# -- rehash --------------------------------------------------------------------


def test_rehash_on_success_when_parameters_changed(store: Store) -> None:
    old = cheap_hasher(time_cost=1)
    new = CountingHasher(cheap_hasher(time_cost=2))
    add_user(store, "alice", "pw", old)
    old_hash = stored_hash(store, "alice")
    assert old_hash is not None and ",t=1," in old_hash
    auth, _ = make_auth(store, new)

    assert run(auth.verify("alice", "wrong", None)) is None
    assert stored_hash(store, "alice") == old_hash  # no rehash on failure

    assert run(auth.verify("alice", "pw", None)) is not None
    upgraded = stored_hash(store, "alice")
    assert upgraded is not None and upgraded != old_hash and ",t=2," in upgraded
    assert run(auth.verify("alice", "pw", None)) is not None
    assert stored_hash(store, "alice") == upgraded  # current: left alone


def test_rehash_never_overwrites_a_password_changed_meanwhile(store: Store) -> None:
    old = cheap_hasher(time_cost=1)
    new = CountingHasher(cheap_hasher(time_cost=2))
    add_user(store, "alice", "old pw", old)
    auth, _ = make_auth(store, new)
    new.gate = threading.Event()  # hold the login inside the hash check

    async def scenario() -> Verified | None:
        login = asyncio.ensure_future(auth.verify("alice", "old pw", None))
        while not new.verified:
            await asyncio.sleep(0.01)
        # The admin changes the password while the login is verifying the old one.
        await store.change_password("alice", old.hash("new pw"))
        new.gate.set()  # type: ignore[union-attr]
        return await login

    # The old password was right when it was checked; the session is logged in
    # under the old generation, so the account watch ends it.
    assert run(scenario()) == Verified(generation=0)
    user = run(store.get_user("alice"))
    assert user is not None and user.password_generation == 1
    assert old.verify(user.password_hash, "new pw")  # the new password stays


def test_a_login_carries_the_password_generation_it_was_checked_against(
        store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "first pw")
    auth, _ = make_auth(store, hasher, session_token_ttl=3600)
    assert run(auth.verify("alice", "first pw", None)) == Verified(generation=0)
    token = run(auth.issue_token("alice"))
    assert token is not None
    assert run(auth.verify_token("alice", token, None)) == Verified(generation=0)
    for generation in (1, 2):
        assert run(store.change_password("alice", cheap_hasher().hash(f"pw {generation}")))
        assert run(auth.verify("alice", f"pw {generation}", None)) == Verified(generation)
    assert run(auth.verify_token("alice", token, None)) is None  # died with the change
    fresh = run(auth.issue_token("alice"))
    assert fresh is not None
    assert run(auth.verify_token("alice", fresh, None)) == Verified(generation=2)


# -- bounded hashing -----------------------------------------------------------


async def _wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("cap", [1, 2])
def test_concurrent_hashes_are_capped(store: Store, hasher: CountingHasher, cap: int) -> None:
    add_user(store, "alice", "pw")
    hasher.gate = threading.Event()
    auth, _ = make_auth(store, hasher, max_concurrent_hashes=cap,
                        pair_policy=ThrottlePolicy(threshold=1000),
                        address_policy=ThrottlePolicy(threshold=1000))

    async def scenario() -> list[Verified | None]:
        tasks = [asyncio.create_task(auth.verify("alice", "pw" if i % 2 else "x", None))
                 for i in range(8)]
        await _wait_for(lambda: hasher.in_flight == cap)
        for _ in range(20):  # give the others every chance to (wrongly) start
            await asyncio.sleep(0)
        assert hasher.in_flight == cap
        hasher.gate.set()  # type: ignore[union-attr]
        return await asyncio.gather(*tasks)

    results = run(scenario())
    assert [r is not None for r in results] == [bool(i % 2) for i in range(8)]
    assert hasher.max_in_flight == cap


def test_cancelled_login_keeps_its_slot_until_the_thread_ends(
    store: Store, hasher: CountingHasher
) -> None:
    hasher.gate = threading.Event()
    auth, _ = make_auth(store, hasher, max_concurrent_hashes=1)

    async def scenario() -> Verified | None:
        first = asyncio.create_task(auth.verify("a", "pw", "10.0.0.1"))
        await _wait_for(lambda: hasher.in_flight == 1)
        first.cancel()  # e.g. the auth timeout fired
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(auth.verify("b", "pw", "10.0.0.2"))
        for _ in range(20):
            await asyncio.sleep(0)
        # The first hash is still running in its thread, so the second waits.
        assert len(hasher.verified) == 1
        hasher.gate.set()  # type: ignore[union-attr]
        return await second

    assert run(scenario()) is None
    assert len(hasher.verified) == 2
    assert hasher.max_in_flight == 1


def test_parallel_burst_is_cut_off_at_the_threshold(store: Store, hasher: CountingHasher) -> None:
    add_user(store, "alice", "pw")
    auth, _ = make_auth(store, hasher, max_concurrent_hashes=1,
                        address_policy=ThrottlePolicy(threshold=1000))

    async def scenario() -> list[Verified | None]:
        return await asyncio.gather(*(auth.verify("alice", f"guess{i}", None) for i in range(20)))

    assert run(scenario()) == [None] * 20
    # Queued guesses are re-checked once they get a slot: only the first
    # `threshold` wrong guesses cost a hash.
    assert len(hasher.verified) == 3


# -- bootstrap user ------------------------------------------------------------


def test_bootstrap_user(store: Store, hasher: CountingHasher,
                        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"CHAT_BOOTSTRAP_USER": "admin",
                                  "CHAT_BOOTSTRAP_PASSWORD": "boot-secret-pw"})
    with caplog.at_level(logging.DEBUG):
        assert run(ensure_bootstrap_user(store, settings, hasher)) is True
    assert any(getattr(r, "user", None) == "admin" for r in caplog.records)
    assert all("boot-secret-pw" not in str(vars(r)) for r in caplog.records)
    auth, _ = make_auth(store, hasher)
    assert run(auth.verify("admin", "boot-secret-pw", None)) is not None

    # A second start with another password does not overwrite the account.
    other = Settings.from_env({"CHAT_BOOTSTRAP_USER": "admin",
                               "CHAT_BOOTSTRAP_PASSWORD": "different-pw"})
    assert run(ensure_bootstrap_user(store, other, hasher)) is False
    assert run(auth.verify("admin", "boot-secret-pw", None)) is not None
    assert run(auth.verify("admin", "different-pw", None)) is None


def test_no_bootstrap_user_configured(store: Store, hasher: CountingHasher) -> None:
    assert run(ensure_bootstrap_user(store, Settings(), hasher)) is False
    assert run(store.list_users()) == []
