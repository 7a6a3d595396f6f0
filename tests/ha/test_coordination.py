"""
What holds across replicas, through a real PostgreSQL (chat_server.coordination):
two PostgresCoordination objects on one database are two replicas.

Proves: one answer per user across replicas (and a waiter is told, and starts
when the other ends: at once through NOTIFY, or after a replica's connection
died); no lock leaks whatever is cancelled when; the rate limit counts the
messages of every replica and never lets more through under concurrency; failed
logins add up across replicas; a dropped connection is reconnected.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import psycopg
import pytest
from chat_server.coordination import (
    CoordinationError,
    LocalCoordination,
    PostgresCoordination,
    user_lock_key,
)
from chat_server.store import open_store

pytestmark = pytest.mark.postgres


def create_schema(url: str) -> None:
    """The store's migrations, as a server's start runs them."""
    async def migrate() -> None:
        store = await open_store(url)
        await store.close()

    asyncio.run(migrate())


def advisory_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND database = (SELECT oid FROM pg_database "
                           "WHERE datname = current_database())").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def db(postgres_db: str) -> str:
    create_schema(postgres_db)
    return postgres_db


async def replicas(url: str, n: int = 2, **kwargs) -> list[PostgresCoordination]:
    return [await PostgresCoordination.open(url, **kwargs) for _ in range(n)]


async def close_all(items: list[PostgresCoordination]) -> None:
    for item in items:
        await item.aclose()


@pytest.fixture
async def pair(db: str) -> AsyncIterator[list[PostgresCoordination]]:
    items = await replicas(db, rate_limit=5)
    yield items
    await close_all(items)


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------------------- one answer per user
def test_one_answer_per_user_across_replicas(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db)
        order: list[str] = []
        positions: list[int] = []
        a_holds, a_may_end = asyncio.Event(), asyncio.Event()

        async def on_a() -> None:
            async with a.user_turn("alice"):
                order.append("a start")
                a_holds.set()
                await a_may_end.wait()
                order.append("a end")

        async def on_b() -> None:
            await a_holds.wait()
            async with b.user_turn("alice", positions.append):
                order.append("b start")

        task_a, task_b = asyncio.create_task(on_a()), asyncio.create_task(on_b())
        await asyncio.wait_for(_until(lambda: positions == [1]), 10)
        assert order == ["a start"]  # b waits, and was told it is next
        a_may_end.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 10)
        assert order == ["a start", "a end", "b start"]
        await close_all([a, b])

    run(scenario())
    assert advisory_locks(db) == 0


def test_other_users_do_not_wait(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db)
        async with a.user_turn("alice"):
            async with asyncio.timeout(10):  # a hang guard: bob never waits for alice
                async with b.user_turn("bob"):
                    pass
        await close_all([a, b])

    run(scenario())


def test_notify_wakes_the_waiter_without_polling(db: str) -> None:
    async def scenario() -> None:
        # Polling once a minute: only the NOTIFY can wake b within the guard.
        a, b = await replicas(db, poll_seconds=60)
        entered = asyncio.Event()
        async with a.user_turn("carol"):
            waiter = asyncio.create_task(_enter(b, "carol", entered))
            await asyncio.sleep(0.3)
            assert not entered.is_set()
        await asyncio.wait_for(entered.wait(), 10)
        await waiter
        await close_all([a, b])

    run(scenario())


async def _enter(c: PostgresCoordination, user: str, entered: asyncio.Event) -> None:
    async with c.user_turn(user):
        entered.set()


def test_a_dead_replicas_lock_is_released_by_the_database(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db, poll_seconds=0.2)
        entered = asyncio.Event()
        holder = asyncio.Event()

        async def hold_forever() -> None:
            async with a.user_turn("dave"):
                holder.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold_forever())
        await holder.wait()
        waiter = asyncio.create_task(_enter(b, "dave", entered))
        await asyncio.sleep(0.5)
        assert not entered.is_set()
        # The replica dies: its database sessions end without any unlock.
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'chat-server coordination' "
                         "AND pid <> pg_backend_pid() AND pid IN (SELECT pid FROM pg_locks "
                         "WHERE locktype = 'advisory')")
        await asyncio.wait_for(entered.wait(), 10)
        await waiter
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The replica whose connection died takes locks again on a new one.
        async with asyncio.timeout(10):
            async with a.user_turn("dave"):
                pass
        await close_all([a, b])

    run(scenario())
    assert advisory_locks(db) == 0


def test_cancellation_at_any_point_never_leaks_a_lock(db: str) -> None:
    async def scenario() -> None:
        group = await replicas(db, n=3, poll_seconds=0.05)
        rng = random.Random(7)
        inside: dict[str, int] = {}
        overlaps: list[str] = []

        async def attempt(c: PostgresCoordination, user: str) -> None:
            async with c.user_turn(user):
                inside[user] = inside.get(user, 0) + 1
                try:
                    if inside[user] > 1:
                        overlaps.append(user)
                    await asyncio.sleep(rng.random() * 0.02)
                finally:
                    inside[user] -= 1

        for _ in range(15):
            tasks = [asyncio.create_task(attempt(rng.choice(group), rng.choice("xyz")))
                     for _ in range(12)]
            await asyncio.sleep(rng.random() * 0.03)
            for t in rng.sample(tasks, 6):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert overlaps == []
        # Every lock was given back: each user is free on every replica.
        for c in group:
            for user in "xyz":
                async with asyncio.timeout(5):
                    async with c.user_turn(user):
                        pass
        await close_all(group)

    run(scenario())
    assert advisory_locks(db) == 0


def test_sessions_on_one_replica_queue_with_positions(db: str) -> None:
    async def scenario() -> None:
        (a,) = await replicas(db, n=1)
        positions: list[int] = []
        first_in = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with a.user_turn("erin"):
                first_in.set()
                await release.wait()

        t1 = asyncio.create_task(first())
        await first_in.wait()
        t2 = asyncio.create_task(_enter(a, "erin", asyncio.Event()))
        await asyncio.sleep(0.05)

        async def third() -> None:
            async with a.user_turn("erin", positions.append):
                pass

        t3 = asyncio.create_task(third())
        await asyncio.sleep(0.2)
        assert positions == [2]  # two of erin's answers ahead of the third
        release.set()
        await asyncio.wait_for(asyncio.gather(t1, t2, t3), 10)
        assert positions == [2, 1]
        await a.aclose()

    run(scenario())


def test_lock_keys_differ_per_user() -> None:
    keys = {user_lock_key(f"user{i}") for i in range(10_000)}
    assert len(keys) == 10_000
    assert user_lock_key("alice") == user_lock_key("alice")
    assert -(2**63) <= user_lock_key("ü" * 64) < 2**63


# ---------------------------------------------------------------------------- rate limit
def test_rate_limit_counts_messages_on_every_replica(db: str) -> None:
    async def scenario() -> list[float]:
        a, b = await replicas(db, rate_limit=5)
        waits = [await (a if i % 2 else b).check_rate("frank") for i in range(7)]
        assert await a.check_rate("grace") == 0.0  # another user has a window of their own
        await close_all([a, b])
        return waits

    waits = run(scenario())
    assert waits[:5] == [0.0] * 5
    assert all(0 < w <= 60 for w in waits[5:]), waits


def test_rate_limit_holds_under_concurrency(db: str) -> None:
    async def scenario() -> list[float]:
        group = await replicas(db, n=3, rate_limit=5)
        waits = await asyncio.gather(*(group[i % 3].check_rate("heidi") for i in range(30)))
        await close_all(group)
        return list(waits)

    waits = run(scenario())
    assert waits.count(0.0) == 5


def test_rate_window_slides(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db, rate_limit=2, rate_window=1.0)
        assert await a.check_rate("ivan") == 0.0
        await asyncio.sleep(0.5)
        assert await b.check_rate("ivan") == 0.0
        wait = await a.check_rate("ivan")
        assert 0 < wait <= 0.5
        await asyncio.sleep(wait + 0.05)
        assert await b.check_rate("ivan") == 0.0  # the oldest left the window
        assert await a.check_rate("ivan") > 0  # refused ones were not counted, the 2nd still is
        await close_all([a, b])

    run(scenario())


def test_rate_limit_zero_is_off(db: str) -> None:
    async def scenario() -> None:
        (a,) = await replicas(db, n=1, rate_limit=0)
        assert [await a.check_rate("judy") for _ in range(50)] == [0.0] * 50
        await a.aclose()

    run(scenario())


# ---------------------------------------------------------------------------- failed logins
def test_failed_logins_add_up_across_replicas(db: str) -> None:
    """The strict per-(account, address) policy: 3 failures, then 1 s, 2 s, ...
    whichever replicas they were made on."""
    async def scenario() -> None:
        a, b = await replicas(db)
        ta, tb = a.login_throttle, b.login_throttle
        await ta.failed("kim", "192.0.2.7")
        await tb.failed("kim", "192.0.2.7")
        assert await ta.wait("kim", "192.0.2.7") == 0.0
        await ta.failed("kim", "192.0.2.7")
        wait = await tb.wait("kim", "192.0.2.7")
        assert 0 < wait <= 1.0
        assert await tb.wait("kim", "192.0.2.8") == 0.0  # only from that address
        await tb.failed("kim", "192.0.2.7")
        assert 1.0 < await ta.wait("kim", "192.0.2.7") <= 2.0  # the backoff doubles
        await ta.succeeded("kim", "192.0.2.7")  # on the other replica: starts afresh
        assert await tb.wait("kim", "192.0.2.7") == 0.0
        await close_all([a, b])

    run(scenario())


def test_spraying_from_one_address_is_throttled_on_every_replica(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db)
        for i in range(10):  # ten accounts, one address, alternating replicas
            await (a if i % 2 else b).login_throttle.failed(f"victim{i}", "198.51.100.9")
        assert await a.login_throttle.wait("someone-else", "198.51.100.9") > 0
        assert await b.login_throttle.wait("someone-else", "198.51.100.10") == 0.0
        await close_all([a, b])

    run(scenario())


def test_distributed_guessing_slows_the_account_but_not_its_owner(db: str) -> None:
    """Per account across addresses: 10 failures from at least 3 addresses
    throttle new addresses; the owner's trusted address stays open."""
    async def scenario() -> None:
        a, b = await replicas(db)
        await a.login_throttle.succeeded("lee", "203.0.113.1")  # the owner, at home
        for i in range(10):
            await (a if i % 2 else b).login_throttle.failed("lee", f"198.51.100.{i}")
        assert await b.login_throttle.wait("lee", "198.51.100.200") > 0
        assert await b.login_throttle.wait("lee", "203.0.113.1") == 0.0
        # Ten failures from one address alone never throttle the account as a whole.
        await close_all([a, b])
        c, d = await replicas(db)
        for _ in range(10):
            await c.login_throttle.failed("mo", "198.51.100.77")
        assert await d.login_throttle.wait("mo", "203.0.113.5") == 0.0
        await close_all([c, d])

    run(scenario())


def test_long_login_names_are_stored_as_a_hash(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db)
        name = "x" * 5000  # a password typed into the name field, say
        for _ in range(3):
            await a.login_throttle.failed(name, "192.0.2.1")
        assert await b.login_throttle.wait(name, "192.0.2.1") > 0
        await close_all([a, b])
        with psycopg.connect(db) as conn:
            longest = conn.execute("SELECT max(length(key)) FROM login_failures").fetchone()
        assert longest is not None and longest[0] <= 200

    run(scenario())


def test_authenticators_of_two_replicas_throttle_together(db: str) -> None:
    """chat_server.auth with the shared throttle: a guess on either replica
    counts, a throttled attempt fails even with the right password."""
    from argon2 import PasswordHasher
    from chat_server.auth import Authenticator

    async def scenario() -> None:
        store = await open_store(db)
        hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        await store.add_user("olga", hasher.hash("right"))
        a, b = await replicas(db)
        auth_a = Authenticator(store, hasher, shared_throttle=a.login_throttle)
        auth_b = Authenticator(store, hasher, shared_throttle=b.login_throttle)
        for auth in (auth_a, auth_b, auth_a):
            assert not await auth.verify("olga", "wrong", "192.0.2.1")
        wait = await auth_b.wait_for("olga", "192.0.2.1")
        assert 0 < wait <= 1.0
        assert not await auth_b.verify("olga", "right", "192.0.2.1")
        await asyncio.sleep(wait + 0.05)
        assert await auth_b.verify("olga", "right", "192.0.2.1")
        assert await auth_a.wait_for("olga", "192.0.2.1") == 0.0
        await close_all([a, b])
        await store.close()

    run(scenario())


# ---------------------------------------------------------------------------- connections
def test_a_dropped_connection_is_reconnected(db: str) -> None:
    async def scenario() -> None:
        (a,) = await replicas(db, n=1, rate_limit=100)
        assert await a.check_rate("nina") == 0.0
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'chat-server coordination' "
                         "AND pid <> pg_backend_pid()")
        assert await a.check_rate("nina") == 0.0
        async with asyncio.timeout(10):
            async with a.user_turn("nina"):
                pass
        await a.aclose()

    run(scenario())


def test_missing_tables_are_a_clear_error(postgres_db: str) -> None:
    with pytest.raises(CoordinationError, match="no coordination tables"):
        run(PostgresCoordination.open(postgres_db))


def test_unreachable_database_is_a_clear_error() -> None:
    from tests.fixtures.engines import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with pytest.raises(CoordinationError, match="cannot connect"):
        run(PostgresCoordination.open(url, connect_timeout=2))


# ---------------------------------------------------------------------------- in one process
def test_local_coordination_is_the_in_memory_behaviour() -> None:
    async def scenario() -> None:
        local = LocalCoordination(rate_limit=2)
        assert [await local.check_rate("o") for _ in range(3)][:2] == [0.0, 0.0]
        positions: list[int] = []
        async with local.user_turn("o"):
            waiter = asyncio.create_task(local.user_turn("o", positions.append).__aenter__())
            await asyncio.sleep(0.05)
            assert positions == [1]
        await waiter
        assert local.login_throttle is None  # the authenticator keeps its own, in memory
        await local.aclose()

    run(scenario())


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)



def test_without_the_database_a_replica_goes_on_and_recovers(postgres_server_factory) -> None:
    server = postgres_server_factory()
    url = server.create_database()
    create_schema(url)

    async def scenario() -> None:
        (a,) = await replicas(url, n=1, rate_limit=1)
        assert await a.check_rate("pat") == 0.0
        assert await a.check_rate("pat") > 0  # limited while the database is there
        server.stop()
        # Down: not limited, not throttled, answers still one at a time here.
        assert await a.check_rate("pat") == 0.0
        assert await a.login_throttle.wait("pat", "192.0.2.1") == 0.0
        await a.login_throttle.failed("pat", "192.0.2.1")
        async with asyncio.timeout(30):
            async with a.user_turn("pat"):
                pass
        server.start()
        # Back: the shared state is used again (the window still holds pat's message).
        async with asyncio.timeout(30):
            assert await a.check_rate("pat") > 0
            async with a.user_turn("pat"):
                pass
        await a.aclose()

    run(scenario())
