"""
The throwaway PostgreSQL clusters of tests/fixtures/postgres.py work with the
driver the store uses (psycopg 3 and its pool): password logins over TCP, a
fresh database per test, and committed data surviving a crash of the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.fixtures.postgres import SUPERUSER, PostgresServer

_seen_databases: list[str] = []


def test_cluster_accepts_a_password_login_over_tcp(postgres_server: PostgresServer) -> None:
    assert postgres_server.url.startswith("postgresql://")
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute(
            "SELECT current_user, host(inet_server_addr()), current_setting('server_version_num')"
        ).fetchone()
    assert row is not None
    user, address, version = row
    assert user == SUPERUSER
    assert address == "127.0.0.1"  # TCP on loopback, not the Unix socket
    assert int(version) >= 130000  # DROP DATABASE ... WITH (FORCE) needs 13+


def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    bad = postgres_server.url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=10)


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_database(postgres_db: str, run: str) -> None:
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]  # type: ignore[index]
        assert tables == 0, f"database {name} is not empty"
        # Both runs create the same table: the second fails if it got the first's database.
        conn.execute("CREATE TABLE marker (run text)")
        conn.execute("INSERT INTO marker VALUES (%s)", (run,))
    assert name != "postgres"
    assert name not in _seen_databases
    _seen_databases.append(name)


def test_async_pool_serves_concurrent_queries(postgres_db: str) -> None:
    async def main() -> list[int]:
        async with AsyncConnectionPool(postgres_db, min_size=1, max_size=3, open=False) as pool:
            async def backend_pid() -> int:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT pg_backend_pid() FROM pg_sleep(0.2)")
                    return (await cur.fetchone())[0]  # type: ignore[index]
            return list(await asyncio.gather(*(backend_pid() for _ in range(3))))

    pids = asyncio.run(main())
    assert len(set(pids)) == 3  # three connections at once, not one after another


def test_committed_rows_survive_a_crash_of_a_private_cluster(
        postgres_server_factory: Callable[[], PostgresServer]) -> None:
    server = postgres_server_factory()
    url = server.create_database("durable")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('kept')")
    port = server.port
    server.kill()
    assert not server.running()
    server.start()
    assert server.port == port
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]
