"""
chat_server.store
~~~~~~~~~~~~~~~~~

The data layer: user accounts and chat turns. :class:`Store` is the narrow
interface the rest of the server uses; :class:`SQLiteStore` is the embedded
default. Another backend (PostgreSQL) would implement the same ABC.

Design notes (SQLite):

* WAL journal, so the CLI (``chat-server users ...``, ``history export``) can read
  and write while the server runs; ``busy_timeout`` makes the two wait for each
  other instead of failing.
* ``synchronous=FULL``: a turn the user has seen acknowledged must survive an OS
  crash or power cut, not only a process crash (with WAL, ``NORMAL`` may lose the
  last commits on power loss). One fsync per turn is cheap next to an LLM answer.
* One connection shared by all threads, serialised by a lock. The server calls
  these synchronous methods through :func:`asyncio.to_thread`.
* Schema versions live in ``PRAGMA user_version``; :data:`MIGRATIONS` lists the
  steps, applied in order inside a transaction.
* Removing a user deletes their turns too (``ON DELETE CASCADE``): the right to
  be forgotten outweighs keeping orphaned history.

Timestamps are timezone-aware UTC :class:`~datetime.datetime` objects in Python
and Unix seconds (REAL) in the database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self, get_args

__all__ = [
    "MAX_USERNAME_LENGTH",
    "MIGRATIONS",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Turn",
    "TurnStatus",
    "UserExists",
    "open_store",
    "validate_username",
]

MAX_USERNAME_LENGTH = 64

TurnStatus = Literal["complete", "cancelled", "error", "interrupted"]
TURN_STATUSES: tuple[str, ...] = get_args(TurnStatus)


class StoreError(Exception):
    """The data layer failed. ``str(exc)`` is one line, safe to log and to
    summarise to an operator (it never contains passwords or message text)."""


class UserExists(StoreError):
    """``add_user`` for a name that is already taken."""


def validate_username(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise :exc:`ValueError`
    with a one-line reason. Valid: 1-64 printable characters, no whitespace
    (which also rules out control and format characters)."""
    if not isinstance(name, str):
        raise ValueError("user name must be text")
    if not name:
        raise ValueError("user name must not be empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise ValueError(f"user name must be at most {MAX_USERNAME_LENGTH} characters")
    # isprintable() is False for control (Cc), format (Cf, e.g. zero-width) and
    # separator characters other than ' '; isspace() catches ' ' itself.
    if any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError("user name must not contain spaces or control characters")
    return name


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's message and the model's (possibly partial) answer.

    ``created_at`` is when the user's message arrived, ``completed_at`` when the
    answer ended (``None`` if it never did). ``status`` says how it ended:
    ``complete``, ``cancelled`` (the user cancelled), ``error`` (the model
    failed) or ``interrupted`` (disconnect or shutdown). ``id`` is set by the
    store."""

    user: str
    conversation: str
    created_at: datetime
    completed_at: datetime | None
    model: str
    user_text: str
    answer_text: str
    prompt_tokens: int | None = None
    answer_tokens: int | None = None
    status: str = "complete"  # one of TURN_STATUSES (see TurnStatus)
    id: int | None = None

    def __post_init__(self) -> None:
        if self.status not in TURN_STATUSES:
            raise ValueError(f"turn status must be one of {', '.join(TURN_STATUSES)}")
        # Normalise to aware UTC so stored and loaded turns compare equal.
        object.__setattr__(self, "created_at", _as_utc(self.created_at))
        if self.completed_at is not None:
            object.__setattr__(self, "completed_at", _as_utc(self.completed_at))


def _as_utc(value: datetime | float) -> datetime:
    """Aware UTC datetime from a datetime (naive ones are taken as UTC) or Unix seconds."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _to_db(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _from_db(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Store(ABC):
    """The operations the server and CLI need. All methods are synchronous and
    thread-safe; they raise :exc:`StoreError` when the backend fails."""

    @abstractmethod
    def add_user(self, name: str, password_hash: str) -> None:
        """Create a user. Raises :exc:`ValueError` for an invalid name and
        :exc:`UserExists` if the name is taken."""

    @abstractmethod
    def get_password_hash(self, name: str) -> str | None:
        """The stored hash, or ``None`` for an unknown user."""

    @abstractmethod
    def set_password_hash(self, name: str, password_hash: str) -> bool:
        """Replace a user's hash; ``False`` if the user does not exist."""

    @abstractmethod
    def list_users(self) -> list[tuple[str, datetime]]:
        """``(name, created_at)`` for every user, sorted by name."""

    @abstractmethod
    def remove_user(self, name: str) -> bool:
        """Delete a user and all their turns; ``False`` if there was no such user."""

    @abstractmethod
    def save_turn(self, turn: Turn) -> int:
        """Store a turn durably and return its id."""

    @abstractmethod
    def turns(
        self, user: str, conversation: str | None = None, limit: int | None = None
    ) -> list[Turn]:
        """A user's turns (optionally of one conversation), oldest first. With
        ``limit``, only the most recent ``limit`` turns (still oldest first)."""

    @abstractmethod
    def conversations(self, user: str) -> list[str]:
        """A user's conversation ids, in the order they were started."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend. Further calls raise :exc:`StoreError`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Each entry moves the schema from version i to i+1. Never edit a released
# entry; append a new one.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at    REAL NOT NULL
    );
    CREATE TABLE turns (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        user          TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        conversation  TEXT NOT NULL,
        created_at    REAL NOT NULL,
        completed_at  REAL,
        model         TEXT NOT NULL,
        user_text     TEXT NOT NULL,
        answer_text   TEXT NOT NULL,
        prompt_tokens INTEGER,
        answer_tokens INTEGER,
        status        TEXT NOT NULL
                      CHECK (status IN ('complete', 'cancelled', 'error', 'interrupted'))
    );
    CREATE INDEX turns_by_user ON turns (user, conversation, id);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

_TURN_COLUMNS = (
    "id, user, conversation, created_at, completed_at, model, user_text, "
    "answer_text, prompt_tokens, answer_tokens, status"
)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class SQLiteStore(Store):
    """:class:`Store` on one SQLite file.

    ``read_only=True`` opens the file without write access (for inspection;
    writes then raise :exc:`StoreError`). ``busy_timeout`` is how long a call
    waits for another process's write lock."""

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, busy_timeout: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._closed = False
        self._conn = self._open(busy_timeout)

    # -- opening -----------------------------------------------------------

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise StoreError(f"cannot open database {path}: it is a directory")
        if self.read_only:
            if not path.exists():
                raise StoreError(f"cannot open database {path}: no such file")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create database directory {path.parent}: {_one_line(exc)}"
                ) from None
            # SQLite would open an unwritable file read-only and only fail at the
            # first write; fail now, clearly. WAL also needs to create files
            # next to the database, so the directory must be writable too.
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                raise StoreError(f"cannot open database {path}: the file is not writable")
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise StoreError(
                    f"cannot open database {path}: directory {path.parent} is not writable"
                )
        try:
            if self.read_only:
                uri = path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(
                    uri, uri=True, timeout=busy_timeout, check_same_thread=False,
                    isolation_level=None,
                )
            else:
                conn = sqlite3.connect(
                    path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {_one_line(exc)}") from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot open database {path}: WAL journal not available")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open database {path}: {_one_line(exc)}") from None
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this "
                f"server supports ({SCHEMA_VERSION}); upgrade chat-server"
            )
        if version == SCHEMA_VERSION:
            return
        if self.read_only:
            raise StoreError(
                f"database {self.path} has schema version {version}; open it read-write "
                f"once to upgrade to {SCHEMA_VERSION}"
            )
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting
        # at once cannot both run the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for index in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[index]):
                    conn.execute(statement)
                # PRAGMA does not take parameters; index is our own integer.
                conn.execute(f"PRAGMA user_version = {index + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        with self._locked() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        with self._locked() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    # -- plumbing ----------------------------------------------------------

    def _locked(self) -> _Locked:
        return _Locked(self)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- users -------------------------------------------------------------

    def add_user(self, name: str, password_hash: str) -> None:
        validate_username(name)
        if not password_hash:
            raise ValueError("password hash must not be empty")
        with self._locked() as conn:
            try:
                conn.execute(
                    "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                    (name, password_hash, time.time()),
                )
            except sqlite3.IntegrityError:
                raise UserExists(f"user {name!r} already exists") from None

    def get_password_hash(self, name: str) -> str | None:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_password_hash(self, name: str, password_hash: str) -> bool:
        if not password_hash:
            raise ValueError("password hash must not be empty")
        with self._locked() as conn:
            cur = conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
            return cur.rowcount > 0

    def list_users(self) -> list[tuple[str, datetime]]:
        with self._locked() as conn:
            rows = conn.execute("SELECT name, created_at FROM users ORDER BY name").fetchall()
        return [(str(name), datetime.fromtimestamp(created, UTC)) for name, created in rows]

    def remove_user(self, name: str) -> bool:
        with self._locked() as conn:
            # foreign_keys=ON + ON DELETE CASCADE removes the turns in the same
            # statement, hence the same transaction.
            cur = conn.execute("DELETE FROM users WHERE name = ?", (name,))
            return cur.rowcount > 0

    # -- turns -------------------------------------------------------------

    def save_turn(self, turn: Turn) -> int:
        with self._locked() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO turns (user, conversation, created_at, completed_at, model, "
                    "user_text, answer_text, prompt_tokens, answer_tokens, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        turn.user, turn.conversation, _to_db(turn.created_at),
                        _to_db(turn.completed_at),
                        turn.model, turn.user_text, turn.answer_text, turn.prompt_tokens,
                        turn.answer_tokens, turn.status,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    # The user was removed while the conversation was going on.
                    raise StoreError(f"cannot save turn: no user {turn.user!r}") from None
                raise StoreError(f"cannot save turn: {_one_line(exc)}") from None
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

    def turns(
        self, user: str, conversation: str | None = None, limit: int | None = None
    ) -> list[Turn]:
        where, params = "user = ?", [user]
        if conversation is not None:
            where += " AND conversation = ?"
            params.append(conversation)
        sql = f"SELECT {_TURN_COLUMNS} FROM turns WHERE {where} ORDER BY id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must be >= 0")
            sql += " LIMIT ?"
            params.append(limit)  # type: ignore[arg-type]
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        rows.reverse()  # newest-first for LIMIT, then back to chronological order
        return [
            Turn(
                id=row[0], user=row[1], conversation=row[2],
                created_at=datetime.fromtimestamp(row[3], UTC), completed_at=_from_db(row[4]), model=row[5], user_text=row[6], answer_text=row[7],
                prompt_tokens=row[8], answer_tokens=row[9], status=row[10],
            )
            for row in rows
        ]

    def conversations(self, user: str) -> list[str]:
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT conversation FROM turns WHERE user = ? "
                "GROUP BY conversation ORDER BY MIN(id)",
                (user,),
            ).fetchall()
        return [str(row[0]) for row in rows]


class _Locked:
    """``with store._locked() as conn``: hold the store's lock and turn any
    SQLite failure into a one-line :exc:`StoreError`."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        if self._store._closed:
            self._store._lock.release()
            raise StoreError(f"database {self._store.path} is closed")
        return self._store._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        self._store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"database {self._store.path}: {_one_line(exc)}") from None


def _split_sql(script: str) -> list[str]:
    # Our migrations contain no ';' inside literals or triggers, so a plain split
    # is enough; executescript() is avoided because it COMMITs implicitly.
    return [s.strip() for s in script.split(";") if s.strip()]


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open the configured backend (today always SQLite)."""
    return SQLiteStore(path)
