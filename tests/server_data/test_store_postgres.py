"""What only the PostgreSQL engine has: the password beside the URL, clear
errors when the server is unreachable or refuses us, the commit guarantee,
and schema versions recorded in the database."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from chat_server.store import SCHEMA_VERSION, StoreError, open_store
from chat_server.store.postgres import PostgresStore, redact_url

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def without_password(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    assert parts.password is not None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}")), parts.password


async def test_password_beside_the_url(postgres_db: str) -> None:
    url, password = without_password(postgres_db)
    store = await open_store(url, password=password)
    try:
        assert isinstance(store, PostgresStore)
        assert password not in store.url
        await store.add_user("alice", "h")
        assert await store.get_user("alice") is not None
    finally:
        await store.close()


async def test_wrong_password_is_one_line_without_the_password(postgres_db: str) -> None:
    url, _ = without_password(postgres_db)
    secret = "Not-The-Password-42"
    with pytest.raises(StoreError) as info:
        await open_store(url, password=secret)
    message = str(info.value)
    assert "\n" not in message and secret not in message
    assert "password authentication failed" in message
    assert message.startswith(f"cannot connect to database {url}")


async def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(f"postgresql://u:secret@127.0.0.1:{port}/db", connect_timeout=2)
    message = str(info.value)
    assert "\n" not in message and "secret" not in message
    assert "cannot connect to database postgresql://u@127.0.0.1" in message


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == (
        "postgresql://u@h:5432/db?sslmode=require")
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"


async def test_every_connection_commits_synchronously(postgres_db: str) -> None:
    admin = psycopg.connect(postgres_db, autocommit=True)
    try:
        dbname = urlsplit(postgres_db).path.lstrip("/")
        # Even where the operator turned it off for the database.
        admin.execute(f"ALTER DATABASE {dbname} SET synchronous_commit = off")
    finally:
        admin.close()
    store = await open_store(postgres_db)
    try:
        assert isinstance(store, PostgresStore)
        rows = await store._query("SHOW synchronous_commit")
        assert rows == [("on",)]
    finally:
        await store.close()


async def test_schema_versions_are_recorded_and_newer_is_refused(postgres_db: str) -> None:
    await (await open_store(postgres_db)).close()
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO schema_version VALUES (%s, 'future', now())",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this server supports"):
        await open_store(postgres_db)


async def test_database_going_away_is_a_store_error_then_recovers(postgres_db: str) -> None:
    store = await open_store(postgres_db)
    try:
        await store.add_user("alice", "h")
        # Every connection of the pool is killed by the server (as a restart would).
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        try:
            await store.get_user("alice")
        except StoreError as exc:
            assert "\n" not in str(exc)
        # The pool replaces broken connections: the next calls work.
        for _ in range(3):
            try:
                user = await store.get_user("alice")
            except StoreError:
                continue
            assert user is not None
            break
        else:
            pytest.fail("the store did not recover after its connections were killed")
    finally:
        await store.close()
