"""
chat_server.store.postgres
~~~~~~~~~~~~~~~~~~~~~~~~~~

The PostgreSQL engine (``CHAT_DB=postgresql://USER@HOST:PORT/DBNAME``), on
psycopg 3 with psycopg_pool's :class:`~psycopg_pool.AsyncConnectionPool`.

* The password travels beside the URL, never inside a string that could be
  logged; the URL this module names in errors has no password.
* Every connection runs with ``synchronous_commit = on`` whatever the server's
  default, so a committed turn is on the database server's disk before the
  answer's END is sent (the same guarantee SQLite gives with ``synchronous=FULL``).
* Migrations run in one transaction under a PostgreSQL advisory lock: replicas
  starting at once wait for each other, and the second finds the work done.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .base import StoreError
from .migrations import MIGRATIONS, SCHEMA_VERSION, statements
from .sql import ConstraintError, Row, SQLStore

__all__ = ["PostgresStore", "redact_url"]

log = logging.getLogger("chat_server.store")

#: Key of the advisory lock held while migrating ("chatmigr" in ASCII).
MIGRATION_LOCK = 0x636861746D696772
POOL_MAX_SIZE = 10
CONNECT_TIMEOUT = 10.0


def redact_url(url: str) -> str:
    """``url`` without its password (if it has one)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://?"
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}@{host}"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStore(SQLStore):
    """:class:`~.base.Store` on a PostgreSQL database. Open it with :meth:`open`."""

    engine = "postgresql"

    def __init__(self, url: str, pool: AsyncConnectionPool[Any]) -> None:
        self.url = url
        self._pool = pool
        self._version = 0
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, password: str | None = None, connect_timeout: float = CONNECT_TIMEOUT
    ) -> PostgresStore:
        """Connect to ``url`` and migrate. A password in the URL is split off;
        ``password`` is used when the URL has none."""
        shown = redact_url(url)
        parts = urlsplit(url)
        if parts.password is not None:
            password = unquote(parts.password)
            url = shown
        kwargs: dict[str, Any] = {"autocommit": True}
        if password is not None:
            kwargs["password"] = password

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SET synchronous_commit = on")

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, kwargs=kwargs, min_size=1, max_size=POOL_MAX_SIZE, open=False,
            configure=configure, name="chat-store", timeout=10.0,
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            reason = await _connect_error(url, kwargs, connect_timeout)
            await pool.close()
            raise StoreError(f"cannot connect to database {shown}: {reason}") from None
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise StoreError(f"cannot connect to database {shown}: {_one_line(exc)}") from None
        store = cls(shown, pool)
        try:
            store._version = await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    # -- engine primitives --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise StoreError(f"database {self.url} is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise StoreError(f"database {self.url}: no connection available (is the "
                             "database server up?)") from None
        except psycopg.Error as exc:
            raise _translate(exc, self.url) from None

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            cur = await conn.execute(_pg(sql), params)
            return await cur.fetchall() if cur.description is not None else []

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(_pg(sql), params)
            return cur.rowcount

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        async with self._connection() as conn, conn.transaction():
            yield _Tx(conn, self.url)

    def _to_db_time(self, value: datetime) -> datetime:
        return value

    def _from_db_time(self, value: Any) -> datetime:
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    @property
    def schema_version(self) -> int:
        return self._version

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()

    # -- migrations -----------------------------------------------------------------

    async def _migrate(self) -> int:
        async with self._transaction() as tx:
            await tx.query(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            rows = await tx.query("SELECT MAX(version) FROM schema_version")
            version = int(rows[0][0] or 0)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.url} has schema version {version}, newer than this "
                    f"server supports ({SCHEMA_VERSION}); upgrade chat-server"
                )
            for index in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[index].postgres):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (index + 1, MIGRATIONS[index].description, datetime.now(UTC)),
                )
        if version < SCHEMA_VERSION:
            log.info("database %s upgraded from schema version %d to %d", self.url, version,
                     SCHEMA_VERSION, extra={"event": "db_migrated"})
        return SCHEMA_VERSION


def _translate(exc: psycopg.Error, url: str) -> StoreError:
    if isinstance(exc, pg_errors.IntegrityError):
        kind = ("unique" if isinstance(exc, pg_errors.UniqueViolation) else
                "foreign_key" if isinstance(exc, pg_errors.ForeignKeyViolation) else "check")
        return ConstraintError(kind, _one_line(exc))  # type: ignore[arg-type]
    return StoreError(f"database {url}: {_one_line(exc)}")


def _pg(sql: str) -> Any:
    # Our SQL uses '?' placeholders and never a literal '?' or '%'.
    return sql.replace("?", "%s")


async def _connect_error(url: str, kwargs: dict[str, Any], timeout: float) -> str:
    """Why connecting fails (the pool only says it timed out)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, connect_timeout=max(1, int(timeout)), **kwargs
        )
    except (psycopg.Error, OSError) as exc:
        return _one_line(exc)
    await conn.close()
    return "timed out"


class _Tx:
    def __init__(self, conn: psycopg.AsyncConnection[Any], url: str) -> None:
        self._conn = conn
        self._url = url

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            cur = await self._conn.execute(_pg(sql), params)
            return await cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise _translate(exc, self._url) from None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cur = await self._conn.execute(_pg(sql), params)
            return cur.rowcount
        except psycopg.Error as exc:
            raise _translate(exc, self._url) from None
