"""Fixtures of the data-layer tests: every store test runs on each engine.

``store_target`` is what ``CHAT_DB`` would hold: a SQLite file in the test's
tmp dir, or the URL of a fresh PostgreSQL database (``postgres_db``, from
tests/fixtures/postgres.py).
Async tests run on asyncio through anyio's pytest plugin.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chat_server.store import Store, open_store

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of ``engine``, as a CHAT_DB value."""
    if engine == "sqlite":
        return str(tmp_path / "nested" / "dir" / "chat.db")
    url: Any = request.getfixturevalue("postgres_db")
    return str(url)


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    s = await open_store(store_target)
    try:
        yield s
    finally:
        await s.close()


def read_database(target: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read over a connection of our own, not the store's: what
    is in the database, as any other program would see it."""
    if target.startswith(("postgresql://", "postgres://")):
        with psycopg.connect(target) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(target)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


@pytest.fixture
def database_rows(store_target: str) -> Callable[[str], list[tuple[Any, ...]]]:
    """``database_rows(sql)``: :func:`read_database` on this test's database."""
    return lambda sql: read_database(store_target, sql)
