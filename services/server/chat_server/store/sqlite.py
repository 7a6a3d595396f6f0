"""
chat_server.store.sqlite
~~~~~~~~~~~~~~~~~~~~~~~~

The embedded default engine: one SQLite file.

* One connection, owned by one worker thread of the store's own (so a slow
  fsync never takes a thread the rest of the server needs); coroutines hand it
  work and await the result. An asyncio lock keeps a multi-statement
  transaction from interleaving with other callers' statements.
* WAL journal, so the CLI (``chat-server users ...``, ``history export``) can read
  and write while the server runs; ``busy_timeout`` makes the two wait for each
  other instead of failing.
* ``synchronous=FULL``: a turn the user has seen acknowledged must survive an OS
  crash or power cut, not only a process crash (with WAL, ``NORMAL`` may lose the
  last commits on power loss). One fsync per turn is cheap next to an LLM answer.
* Private files: the database's directory is created 0700 and the database 0600
  (SQLite gives its ``-wal`` and ``-shm`` files the database's mode). Looser
  modes found at start are tightened, with a log line: the file holds every
  chat and every password hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .base import StoreError
from .migrations import MIGRATIONS, SCHEMA_VERSION, statements
from .sql import ConstraintError, Row, SQLStore

__all__ = ["SQLiteStore"]

log = logging.getLogger("chat_server.store")

T = TypeVar("T")

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The files SQLite keeps next to the database.
SIDE_FILES = ("-wal", "-shm", "-journal")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class SQLiteStore(SQLStore):
    """:class:`~.base.Store` on one SQLite file. Open it with :meth:`open`."""

    engine = "sqlite"

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._version = 0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> SQLiteStore:
        """Open (creating it if needed) and migrate the database at ``path``."""
        store = cls(Path(path), busy_timeout)
        try:
            await store._call(store._open)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    # -- plumbing --------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store's thread; SQLite errors become one-line StoreErrors."""
        if self._closed:
            raise StoreError(f"database {self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn)

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.IntegrityError as exc:
            text = str(exc)
            kind = ("unique" if "UNIQUE" in text else
                    "foreign_key" if "FOREIGN KEY" in text else "check")
            raise ConstraintError(kind, _one_line(exc)) from None  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {_one_line(exc)}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._closed or self._conn is None:
            raise StoreError(f"database {self.path} is closed")
        return self._conn

    def _loop_lock(self) -> asyncio.Lock:
        # One lock per event loop: a store opened by one asyncio.run() may be
        # used by the next one (the CLI, tests), and a lock is bound to its loop.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        def run() -> list[Row]:
            return self._connection().execute(sql, params).fetchall()

        async with self._loop_lock():
            return await self._call(run)

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        def run() -> int:
            return self._connection().execute(sql, params).rowcount

        async with self._loop_lock():
            return await self._call(run)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        async with self._loop_lock():
            await self._call(lambda: self._connection().execute("BEGIN IMMEDIATE"))
            try:
                yield _Tx(self._call, self._connection)
            except BaseException:
                await asyncio.shield(self._call(self._rollback))
                raise
            await self._call(lambda: self._connection().execute("COMMIT"))

    def _rollback(self) -> None:
        conn = self._connection()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _to_db_time(self, value: datetime) -> float:
        return value.timestamp()

    def _from_db_time(self, value: Any) -> datetime:
        return datetime.fromtimestamp(float(value), UTC)

    @property
    def schema_version(self) -> int:
        return self._version

    async def close(self) -> None:
        if self._closed:
            return

        def run() -> None:
            self._closed = True
            if self._conn is not None:
                self._conn.close()

        with contextlib.suppress(RuntimeError):  # the executor is already gone
            await self._call(run)
        self._closed = True
        self._executor.shutdown(wait=False)

    # -- opening (on the store's thread) ----------------------------------------------

    def _open(self) -> None:
        path = self.path
        if path.is_dir():
            raise StoreError(f"cannot open database {path}: it is a directory")
        self._prepare_directory(path.parent)
        # SQLite would open an unwritable file read-only and only fail at the
        # first write; fail now, clearly. WAL also needs to create files next
        # to the database, so the directory must be writable too.
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"cannot open database {path}: the file is not writable")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(f"cannot open database {path}: directory {path.parent} is not writable")
        self._prepare_files(path)
        try:
            conn = sqlite3.connect(path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {_one_line(exc)}") from None
        try:
            self._version = self._set_up(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open database {path}: {_one_line(exc)}") from None
        self._conn = conn

    def _prepare_directory(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create database directory {directory}: {_one_line(exc)}"
            ) from None
        try:
            st = directory.stat()
        except OSError:
            return
        if not st.st_mode & 0o077:
            return
        # A shared directory (sticky, like /tmp) or somebody else's is not ours
        # to close; the database files themselves are still made private.
        if st.st_mode & stat.S_ISVTX or st.st_uid != os.geteuid():
            log.warning("database directory %s is accessible to other users (mode %o); "
                        "keep the database in a private directory",
                        directory, stat.S_IMODE(st.st_mode), extra={"event": "db_permissions"})
            return
        self._tighten(directory, DIR_MODE, st.st_mode)

    def _prepare_files(self, path: Path) -> None:
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
            except OSError as exc:
                raise StoreError(f"cannot create database {path}: {_one_line(exc)}") from None
        for f in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
            try:
                st = f.stat()
            except OSError:
                continue
            if st.st_mode & 0o077:
                self._tighten(f, FILE_MODE, st.st_mode)

    @staticmethod
    def _tighten(target: Path, mode: int, old: int) -> None:
        try:
            target.chmod(mode)
        except OSError as exc:
            log.warning("could not restrict %s to mode %o: %s", target, mode, _one_line(exc),
                        extra={"event": "db_permissions"})
            return
        log.warning("restricted %s from mode %o to %o (it holds chats and password hashes)",
                    target, stat.S_IMODE(old), mode, extra={"event": "db_permissions"})

    def _set_up(self, conn: sqlite3.Connection) -> int:
        """Pragmas and migrations; the schema version. Several processes opening
        a new database at the same moment (replicas, the CLI beside the server)
        take turns: switching it to WAL needs the file to itself, and SQLite
        answers "database is locked" at once there instead of waiting, so wait
        here, up to the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot open database {self.path}: WAL journal not available")
                conn.execute("PRAGMA synchronous = FULL")
                return self._migrate(conn)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self, conn: sqlite3.Connection) -> int:
        version = self._read_version(conn)
        if version == SCHEMA_VERSION:
            return version
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting
        # at once cannot both run the same step; the second re-reads the version.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            recorded = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            version = self._read_version(conn)
            if recorded is None:
                # A database of the first release: its version is user_version.
                for index in range(version):
                    conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                 (index + 1, MIGRATIONS[index].description, time.time()))
            for index in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[index].sqlite):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                             (index + 1, MIGRATIONS[index].description, time.time()))
            # PRAGMA takes no parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if version < SCHEMA_VERSION:
            log.info("database %s upgraded from schema version %d to %d", self.path, version,
                     SCHEMA_VERSION, extra={"event": "db_migrated"})
        return SCHEMA_VERSION

    def _read_version(self, conn: sqlite3.Connection) -> int:
        """The schema version (refusing one newer than this code knows)."""
        legacy = int(conn.execute("PRAGMA user_version").fetchone()[0])
        version = legacy
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if has_table:
            recorded = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if recorded is not None:
                version = int(recorded)
        if max(version, legacy) > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {max(version, legacy)}, newer than "
                f"this server supports ({SCHEMA_VERSION}); upgrade chat-server"
            )
        return version


class _Tx:
    """The statements of one transaction: ``call`` runs a function on the
    store's thread, where ``connection()`` is its connection."""

    def __init__(self, call: Callable[[Callable[[], Any]], Awaitable[Any]],
                 connection: Callable[[], sqlite3.Connection]) -> None:
        self._call, self._connection = call, connection

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        connection = self._connection
        rows: list[Row] = await self._call(lambda: connection().execute(sql, params).fetchall())
        return rows

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        connection = self._connection
        count: int = await self._call(lambda: connection().execute(sql, params).rowcount)
        return count
