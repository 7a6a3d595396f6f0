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
    POSTGRES_SCHEMA,
    CoordinationError,
    LocalCoordination,
    MemoryFailureCounters,
    PostgresCoordination,
    user_lock_key,
)

pytestmark = pytest.mark.postgres


def create_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in POSTGRES_SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


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
    async def scenario() -> None:
        a, b = await replicas(db)
        await a.failures.record(["user:kim", "address:192.0.2.7"], window=900)
        await b.failures.record(["user:kim"], window=900)
        got = await a.failures.get(["user:kim", "address:192.0.2.7", "user:lee"], window=900)
        assert got["user:kim"].count == 2 and got["address:192.0.2.7"].count == 1
        assert "user:lee" not in got
        assert 0 <= got["user:kim"].age < 60
        await b.failures.reset(["user:kim"])
        assert "user:kim" not in await a.failures.get(["user:kim"], window=900)
        # A long key (a password typed as the user name) is stored as a hash.
        long_key = "user:" + "x" * 5000
        await a.failures.record([long_key], window=900)
        assert (await b.failures.get([long_key], window=900))[long_key].count == 1
        await close_all([a, b])

    run(scenario())


def test_failures_older_than_the_window_start_over(db: str) -> None:
    async def scenario() -> None:
        a, b = await replicas(db)
        await a.failures.record(["user:mia"], window=0.3)
        await asyncio.sleep(0.5)
        assert await b.failures.get(["user:mia"], window=0.3) == {}
        await b.failures.record(["user:mia"], window=0.3)
        assert (await a.failures.get(["user:mia"], window=0.3))["user:mia"].count == 1
        await close_all([a, b])

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
        counters = MemoryFailureCounters(max_entries=3)
        await counters.record(["a", "b", "c", "d"], window=60)
        assert len(counters) == 3 and await counters.get(["a"], 60) == {}
        await local.aclose()

    run(scenario())


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
