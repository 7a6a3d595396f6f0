"""
chat_server.coordination
~~~~~~~~~~~~~~~~~~~~~~~~

What must hold for a user across every server process that shares one
database: one answer in flight per user, the per-user message rate limit, and
the counters behind failed-login throttling. One interface,
:class:`Coordination`, two implementations:

* :class:`LocalCoordination` (SQLite: one server process) keeps it all in
  memory: :class:`~chat_server.scheduler.UserLine`,
  :class:`~chat_server.ratelimit.RateLimiter`, :class:`MemoryFailureCounters`.
* :class:`PostgresCoordination` (``CHAT_DB=postgresql://...``: any number of
  replicas) keeps it in PostgreSQL, so it holds globally:

  - **One answer per user.** A replica first queues the user's answers among its
    own sessions (the same :class:`UserLine`, with positions), then takes a
    *session-level advisory lock* keyed by the user on a connection of its own,
    held for the whole answer. An answer of the same user on another replica
    waits (its client gets the usual queue notice) and starts when the lock is
    released: a ``NOTIFY`` wakes it at once; a replica that died releases its
    locks with its connection, which the waiter notices within
    :data:`POLL_SECONDS`.
  - **Rate limit.** One ``INSERT ... ON CONFLICT DO UPDATE`` per message on a
    row per user holding the send times of the last window (at most
    ``CHAT_RATE_LIMIT`` of them): the row lock serialises replicas, the
    database's clock is the only clock, the promise is the same sliding window
    as :class:`RateLimiter` (never more than N messages in any 60 s; refused
    messages are not counted).
  - **Failed logins.** Counters per key (user, address) with the time of the
    last failure, upserted the same way; the policy (thresholds, backoff) stays
    in :mod:`chat_server.auth`, which reads ``(count, seconds since the last
    failure)`` from here, so clocks of the replicas never matter.

If the coordination connection to PostgreSQL drops, the locks it held are
released by the database; answers already running finish, and the next
operation reconnects. That window is the only time two answers of one user can
overlap (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .ratelimit import RateLimiter
from .scheduler import PositionCallback, UserLine

__all__ = [
    "POLL_SECONDS",
    "Coordination",
    "CoordinationError",
    "FailureCounters",
    "LocalCoordination",
    "MemoryFailureCounters",
    "PostgresCoordination",
    "user_lock_key",
]

log = logging.getLogger("chat_server.coordination")

#: How often a waiter re-tries a user's lock without a NOTIFY (a holder that died).
POLL_SECONDS = 1.0
#: The channel a released user lock is announced on (payload: the lock key).
CHANNEL = "chat_user_line"
#: Failure keys longer than this are stored as a hash (a user name can be 64 characters).
MAX_KEY_CHARS = 200


class CoordinationError(Exception):
    """The shared state cannot be reached; ``str(exc)`` is one line, safe to log."""


def user_lock_key(user: str) -> int:
    """The advisory lock of ``user``'s answers: a signed 64-bit hash of the name
    (a collision only makes two users wait for each other)."""
    digest = hashlib.blake2b(b"chat-user-line\0" + user.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def failure_key(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Failures:
    count: int
    age: float  # seconds since the last failure


class FailureCounters(Protocol):
    """Failed-login counters shared by everything that checks passwords.
    ``window``: a failure older than this starts the count again."""

    async def get(self, keys: Sequence[str], window: float) -> dict[str, Failures]:
        """The live counters among ``keys`` (absent: none in the window)."""

    async def record(self, keys: Sequence[str], window: float) -> None:
        """One more failure for each key."""

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the keys' failures (a successful login)."""


class MemoryFailureCounters:
    """In one process: bounded, least recently failed forgotten first."""

    def __init__(self, max_entries: int = 200_000,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, keys: Sequence[str], window: float) -> dict[str, Failures]:
        now = self._clock()
        out = {}
        for key in keys:
            entry = self._entries.get(failure_key(key))
            if entry is not None and now - entry[1] <= window:
                out[key] = Failures(entry[0], now - entry[1])
        return out

    async def record(self, keys: Sequence[str], window: float) -> None:
        now = self._clock()
        for key in map(failure_key, keys):
            count, last = self._entries.pop(key, (0, now))
            self._entries[key] = (1 if now - last > window else count + 1, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def reset(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._entries.pop(failure_key(key), None)


class Coordination(ABC):
    """See the module docstring."""

    engine: str
    failures: FailureCounters

    @abstractmethod
    def user_turn(self, user: str,
                  on_position: PositionCallback | None = None) -> AbstractAsyncContextManager[None]:
        """Hold the user's one answer slot for the body of the ``async with``;
        ``on_position(n)`` while waiting (``n`` answers of the user ahead)."""

    @abstractmethod
    async def check_rate(self, user: str) -> float:
        """0.0: the message is allowed (and counted); else seconds to wait."""

    async def aclose(self) -> None:  # noqa: B027 - nothing to release in memory
        """Release everything (the locks too)."""


class LocalCoordination(Coordination):
    """One process: everything in memory."""

    engine = "local"

    def __init__(self, rate_limit: int) -> None:
        self.line = UserLine()
        self.rate = RateLimiter(rate_limit)
        self.failures = MemoryFailureCounters()

    def user_turn(self, user: str,
                  on_position: PositionCallback | None = None) -> AbstractAsyncContextManager[None]:
        return self.line.turn(user, on_position)

    async def check_rate(self, user: str) -> float:
        return self.rate.check(user)


# ---------------------------------------------------------------------------- PostgreSQL
#: The tables this module uses (a schema migration creates them; see
#: chat_server.store.migrations).
POSTGRES_TABLES = ("rate_windows", "login_failures")

# The row lock of ON CONFLICT DO UPDATE serialises replicas; the expressions
# read r.sent_at, the row as it is once locked (a CTE would read the snapshot
# from before the wait, and two replicas could both count the same window).
_RATE_SQL = """
INSERT INTO rate_windows AS r (username, sent_at) VALUES (%(user)s, ARRAY[now()])
ON CONFLICT (username) DO UPDATE SET sent_at = CASE
    WHEN (SELECT count(*) FROM unnest(r.sent_at) AS t
          WHERE t > now() - make_interval(secs => %(window)s)) < %(limit)s
    THEN ARRAY(SELECT t FROM unnest(r.sent_at) AS t
               WHERE t > now() - make_interval(secs => %(window)s) ORDER BY t) || now()
    ELSE ARRAY(SELECT t FROM unnest(r.sent_at) AS t
               WHERE t > now() - make_interval(secs => %(window)s) ORDER BY t)
    END
RETURNING sent_at[cardinality(sent_at)] = now() AS allowed,
          GREATEST(0, EXTRACT(EPOCH FROM (sent_at[1] + make_interval(secs => %(window)s) - now())))
              AS wait
"""

_FAILURES_GET_SQL = """
SELECT key, failures, EXTRACT(EPOCH FROM (now() - last_failure))
FROM login_failures
WHERE key = ANY(%(keys)s) AND last_failure > now() - make_interval(secs => %(window)s)
"""

_FAILURES_RECORD_SQL = """
INSERT INTO login_failures AS f (key, failures, last_failure) VALUES (%(key)s, 1, now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.last_failure > now() - make_interval(secs => %(window)s)
                    THEN f.failures + 1 ELSE 1 END,
    last_failure = now()
"""

_FAILURES_PRUNE_SQL = """
DELETE FROM login_failures WHERE last_failure < now() - make_interval(secs => %(window)s)
"""

#: Prune expired failure rows at most this often (seconds).
PRUNE_SECONDS = 60.0


class _Connector:
    """Opens psycopg connections to one database (password beside the URL)."""

    def __init__(self, url: str, password: str | None, connect_timeout: float) -> None:
        self.url = url
        self.kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, int(connect_timeout)),
            # A database that vanished (host gone, not just the process) is
            # noticed within ~30 s instead of the kernel's two hours.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
            "application_name": "chat-server coordination",
        }
        if password is not None:
            self.kwargs["password"] = password

    async def connect(self) -> Any:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **self.kwargs)
            await conn.execute("SET synchronous_commit = on")
            return conn
        except (psycopg.Error, OSError) as exc:
            raise CoordinationError(f"cannot connect to the database for coordination: "
                                    f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


class PostgresCoordination(Coordination):
    """Across replicas, through PostgreSQL. Open it with :meth:`open`."""

    engine = "postgresql"

    def __init__(self, connector: _Connector, rate_limit: int, *,
                 rate_window: float = 60.0, poll_seconds: float = POLL_SECONDS) -> None:
        self._connector = connector
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.poll_seconds = poll_seconds
        self.line = UserLine()
        self.failures = _PostgresFailures(self)
        self._locks: Any = None  # connection holding the users' advisory locks
        self._locks_lock = asyncio.Lock()
        self._queries: Any = None  # connection for rate limits and failure counters
        self._queries_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._released: dict[int, asyncio.Event] = {}  # keys waited for on this replica
        self._waiting: dict[int, int] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._held: dict[int, int] = {}  # key -> times held on the current lock connection
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, password: str | None = None, rate_limit: int = 0,
                   connect_timeout: float = 10.0, rate_window: float = 60.0,
                   poll_seconds: float = POLL_SECONDS) -> PostgresCoordination:
        """Connect and check that the tables exist (the store's migrations made them)."""
        self = cls(_Connector(url, password, connect_timeout), rate_limit,
                   rate_window=rate_window, poll_seconds=poll_seconds)
        conn = await self._query_connection()
        try:
            async with self._queries_lock:
                cur = await conn.execute(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (list(POSTGRES_TABLES),))
                row = await cur.fetchone()
        except Exception as exc:
            await self.aclose()
            raise CoordinationError(f"coordination tables unreadable: {exc}") from None
        if row is None or row[0] != len(POSTGRES_TABLES):
            await self.aclose()
            raise CoordinationError("the database has no coordination tables (schema migrations "
                                    "not applied)")
        self._listener = asyncio.create_task(self._listen(), name="coordination-listener")
        return self

    # -- connections ---------------------------------------------------------------
    async def _query_connection(self) -> Any:
        if self._closed:
            raise CoordinationError("coordination is closed")
        if self._queries is None or self._queries.closed:
            self._queries = await self._connector.connect()
        return self._queries

    async def _lock_connection(self) -> Any:
        if self._closed:
            raise CoordinationError("coordination is closed")
        if self._locks is None or self._locks.closed or self._locks.broken:
            if self._held:
                log.warning("coordination connection lost: %d user locks were released by the "
                            "database", len(self._held), extra={"event": "coordination_lost"})
            self._held.clear()
            self._locks = await self._connector.connect()
        return self._locks

    async def _query(self, sql: str, params: dict[str, Any] | tuple[Any, ...]) -> list[Any]:
        import psycopg

        async with self._queries_lock:
            for attempt in (1, 2):
                conn = await self._query_connection()
                try:
                    cur = await conn.execute(sql, params)
                    return list(await cur.fetchall()) if cur.description else []
                except psycopg.OperationalError as exc:
                    # A dropped connection: reconnect once, then give up.
                    with contextlib.suppress(Exception):
                        await conn.close()
                    self._queries = None
                    if attempt == 2:
                        raise CoordinationError(
                            f"coordination query failed: {' '.join(str(exc).split())}") from None
                except psycopg.Error as exc:
                    raise CoordinationError(
                        f"coordination query failed: {' '.join(str(exc).split())}") from None
        raise AssertionError("unreachable")

    # -- one answer per user -------------------------------------------------------
    def user_turn(self, user: str,
                  on_position: PositionCallback | None = None) -> AbstractAsyncContextManager[None]:
        return self._user_turn(user, on_position)

    @asynccontextmanager
    async def _user_turn(self, user: str,
                         on_position: PositionCallback | None) -> AsyncIterator[None]:
        # First in line among this replica's sessions of the user, then the lock
        # that spans the replicas.
        async with self.line.turn(user, on_position):
            key = user_lock_key(user)
            await self._acquire(key, on_position)
            try:
                yield
            finally:
                await asyncio.shield(self._release(key))

    async def _acquire(self, key: int, on_position: PositionCallback | None) -> None:
        told = False
        released = self._released.setdefault(key, asyncio.Event())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            while True:
                released.clear()
                if await self._try_lock(key):
                    return
                if not told:
                    told = True  # an answer of the user runs on another replica: next in line
                    if on_position is not None:
                        result = on_position(1)
                        if asyncio.iscoroutine(result):
                            await result
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await released.wait()
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                del self._released[key]

    async def _try_lock(self, key: int) -> bool:
        """``pg_try_advisory_lock``, taken to completion even if the caller is
        cancelled meanwhile (then released again): never a leaked lock."""
        task = asyncio.ensure_future(self._lock_query(key))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            def undo(t: asyncio.Future[bool]) -> None:
                if not t.cancelled() and t.exception() is None and t.result():
                    release = asyncio.ensure_future(self._release(key))
                    self._background.add(release)
                    release.add_done_callback(self._background.discard)
            task.add_done_callback(undo)
            raise

    async def _lock_query(self, key: int) -> bool:
        import psycopg

        async with self._locks_lock:
            for attempt in (1, 2):
                try:
                    conn = await self._lock_connection()
                    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    row = await cur.fetchone()
                    break
                except psycopg.OperationalError as exc:
                    if attempt == 2:
                        raise CoordinationError(
                            f"coordination lock failed: {' '.join(str(exc).split())}") from None
                except psycopg.Error as exc:
                    raise CoordinationError(
                        f"coordination lock failed: {' '.join(str(exc).split())}") from None
            ok = bool(row and row[0])
            if ok:
                self._held[key] = self._held.get(key, 0) + 1
            return ok

    async def _release(self, key: int) -> None:
        import psycopg

        async with self._locks_lock:
            if self._held.get(key, 0) <= 0:
                return  # the connection that held it is gone: so is the lock
            conn = self._locks
            assert conn is not None
            try:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(key)))
            except psycopg.Error as exc:
                log.warning("could not release a user lock (the database releases it with the "
                            "connection): %s", " ".join(str(exc).split()),
                            extra={"event": "coordination_error"})
        event = self._released.get(key)
        if event is not None:
            event.set()  # a waiter on this replica need not wait for the NOTIFY

    async def _listen(self) -> None:
        """Wake local waiters when another replica releases a user's lock."""
        import psycopg

        backoff = 0.5
        while not self._closed:
            conn = None
            try:
                conn = await self._connector.connect()
                await conn.execute(f"LISTEN {CHANNEL}")
                backoff = 0.5
                async for note in conn.notifies():
                    with contextlib.suppress(ValueError):
                        event = self._released.get(int(note.payload))
                        if event is not None:
                            event.set()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, CoordinationError, OSError) as exc:
                if self._closed:
                    return
                log.warning("coordination listener: %s; retrying in %.1f s",
                            " ".join(str(exc).split()), backoff,
                            extra={"event": "coordination_error"})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            # Waiters poll meanwhile; nothing is lost, only slower.

    # -- rate limit ----------------------------------------------------------------
    async def check_rate(self, user: str) -> float:
        if self.rate_limit <= 0:
            return 0.0
        rows = await self._query(_RATE_SQL, {"user": user, "limit": self.rate_limit,
                                             "window": self.rate_window})
        allowed, wait = rows[0]
        return 0.0 if allowed else max(0.001, float(wait))

    # -- lifecycle -----------------------------------------------------------------
    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        for conn in (self._locks, self._queries):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()  # closing releases every advisory lock it held
        self._held.clear()


class _PostgresFailures:
    """:class:`FailureCounters` in the ``login_failures`` table."""

    def __init__(self, owner: PostgresCoordination) -> None:
        self._owner = owner
        self._next_prune = 0.0

    async def get(self, keys: Sequence[str], window: float) -> dict[str, Failures]:
        by_stored = {failure_key(k): k for k in keys}
        rows = await self._owner._query(_FAILURES_GET_SQL,
                                        {"keys": list(by_stored), "window": window})
        return {by_stored[k]: Failures(int(n), float(age)) for k, n, age in rows}

    async def record(self, keys: Sequence[str], window: float) -> None:
        for key in keys:
            await self._owner._query(_FAILURES_RECORD_SQL, {"key": failure_key(key),
                                                            "window": window})
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_prune:
            self._next_prune = loop.time() + PRUNE_SECONDS
            await self._owner._query(_FAILURES_PRUNE_SQL, {"window": window})

    async def reset(self, keys: Sequence[str]) -> None:
        await self._owner._query("DELETE FROM login_failures WHERE key = ANY(%(keys)s)",
                                 {"keys": [failure_key(k) for k in keys]})


#: The schema step the store's migrations apply (PostgreSQL; SQLite gets the
#: same tables, unused). Kept here beside the queries that use it.
POSTGRES_SCHEMA = """
CREATE TABLE rate_windows (
    username TEXT PRIMARY KEY,
    sent_at  TIMESTAMPTZ[] NOT NULL
);
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_by_time ON login_failures (last_failure)
"""
