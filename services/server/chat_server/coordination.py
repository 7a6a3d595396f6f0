"""
chat_server.coordination
~~~~~~~~~~~~~~~~~~~~~~~~

What must hold for a user across every server process that shares one
database: one answer in flight per user, the per-user message rate limit, and
the counters behind failed-login throttling. One interface,
:class:`Coordination`, two implementations:

* :class:`LocalCoordination` (SQLite: one server process) keeps it all in
  memory: :class:`~chat_server.scheduler.UserLine`,
  :class:`~chat_server.ratelimit.RateLimiter`, and no shared login throttle
  (the authenticator's own :class:`~chat_server.throttle.LoginThrottle`).
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
  - **Failed logins.** :class:`PostgresLoginThrottle` applies the policies of
    :mod:`chat_server.throttle` (per account and address, per address, per
    account across addresses, the owner's trusted addresses) to counters in
    the database, upserted the same way; ages are computed by the database,
    so the replicas' clocks never matter.

If the coordination connection to PostgreSQL drops, the locks it held are
released by the database; answers already running finish, and the next
operation reconnects. While the database cannot be reached at all, the
replica goes on without the shared state (a warning is logged at most every
:data:`WARN_SECONDS`): answers still queue per user on this replica, messages
are not rate limited, logins are not throttled beyond what fails anyway
(the store cannot read the user either). Those are the only times two answers
of one user can overlap (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from .admission import client_key
from .ratelimit import RateLimiter
from .scheduler import PositionCallback, UserLine
from .throttle import (
    DEFAULT_ACCOUNT_POLICY,
    DEFAULT_ADDRESS_POLICY,
    DEFAULT_PAIR_POLICY,
    AccountPolicy,
    ThrottlePolicy,
)

Address = str | tuple[Any, ...] | None
#: Runs one statement on the coordination's query connection; the rows it returned.
Query = Callable[[str, dict[str, Any]], Awaitable[list[Any]]]

__all__ = [
    "POLL_SECONDS",
    "Coordination",
    "CoordinationError",
    "LocalCoordination",
    "PostgresCoordination",
    "PostgresLoginThrottle",
    "SharedThrottle",
    "open_coordination",
    "user_lock_key",
]

log = logging.getLogger("chat_server.coordination")

#: How often a waiter re-tries a user's lock without a NOTIFY (a holder that died).
POLL_SECONDS = 1.0
#: At most one warning this often while the shared state cannot be reached.
WARN_SECONDS = 30.0
#: The channel a released user lock is announced on (payload: the lock key).
CHANNEL = "chat_user_line"
#: Failure keys longer than this are stored as a hash (a login name can be long:
#: a password typed into the name field).
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


class SharedThrottle(Protocol):
    """Failed-login throttling on state every replica shares (the interface of
    :class:`chat_server.throttle.LoginThrottle`, asynchronous)."""

    async def wait(self, user: str, address: Address) -> float:
        """Seconds before ``user`` may try again from ``address`` (0.0: now)."""

    async def failed(self, user: str, address: Address) -> None: ...

    async def succeeded(self, user: str, address: Address) -> None: ...


class Coordination(ABC):
    """See the module docstring."""

    engine: str
    #: Shared failed-login throttling, or None: the authenticator keeps its own in memory.
    login_throttle: SharedThrottle | None

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
        self.login_throttle = None

    def user_turn(self, user: str,
                  on_position: PositionCallback | None = None) -> AbstractAsyncContextManager[None]:
        return self.line.turn(user, on_position)

    async def check_rate(self, user: str) -> float:
        return self.rate.check(user)


async def open_coordination(engine: str, url: str, *, password: str | None,
                            rate_limit: int) -> Coordination:
    """The coordination for a store of ``engine`` (``Store.engine``)."""
    if engine == "postgresql":
        return await PostgresCoordination.open(url, password=password, rate_limit=rate_limit)
    return LocalCoordination(rate_limit)


# ---------------------------------------------------------------------------- PostgreSQL
#: The tables this module uses (created by the store's schema migrations,
#: chat_server.store.migrations: "rate_windows and login_failures").
POSTGRES_TABLES = ("rate_windows", "login_failures", "login_trusted")

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
SELECT key, failures, EXTRACT(EPOCH FROM (now() - last_failure)), cardinality(sources)
FROM login_failures
WHERE key = ANY(%(keys)s) AND last_failure > now() - make_interval(secs => %(window)s)
"""

# sources: the distinct addresses a counter's failures came from (at most
# MAX_SOURCES, enough to know min_addresses is reached).
_FAILURES_RECORD_SQL = """
INSERT INTO login_failures AS f (key, failures, last_failure, sources)
VALUES (%(key)s, 1, now(), %(sources)s)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.last_failure > now() - make_interval(secs => %(window)s)
                    THEN f.failures + 1 ELSE 1 END,
    sources = CASE WHEN f.last_failure <= now() - make_interval(secs => %(window)s)
                   THEN EXCLUDED.sources
                   WHEN EXCLUDED.sources <@ f.sources OR cardinality(f.sources) >= %(max_sources)s
                   THEN f.sources
                   ELSE f.sources || EXCLUDED.sources END,
    last_failure = now()
"""

_FAILURES_PRUNE_SQL = """
DELETE FROM login_failures WHERE last_failure < now() - make_interval(secs => %(window)s)
"""

_TRUSTED_GET_SQL = """
SELECT 1 FROM login_trusted
WHERE username = %(user)s AND address = %(address)s
  AND since > now() - make_interval(secs => %(trust_for)s)
"""

_TRUSTED_SET_SQL = """
INSERT INTO login_trusted (username, address, since) VALUES (%(user)s, %(address)s, now())
ON CONFLICT (username, address) DO UPDATE SET since = now()
"""

_TRUSTED_PRUNE_SQL = """
DELETE FROM login_trusted
WHERE username = %(user)s AND address NOT IN (
    SELECT address FROM login_trusted WHERE username = %(user)s
    ORDER BY since DESC LIMIT %(keep)s)
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
        self.login_throttle: SharedThrottle = PostgresLoginThrottle(self._query, self._warn)
        self._locks: Any = None  # connection holding the users' advisory locks
        self._locks_lock = asyncio.Lock()
        self._queries: Any = None  # connection for rate limits and failure counters
        self._queries_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._released: dict[int, asyncio.Event] = {}  # keys waited for on this replica
        self._waiting: dict[int, int] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._next_warning = 0.0
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
                try:
                    if await self._try_lock(key):
                        return
                except CoordinationError as exc:
                    self._warn(f"answering without the cross-replica user lock: {exc}")
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

    def _warn(self, message: str) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_warning:
            self._next_warning = now + WARN_SECONDS
            log.warning("%s", message, extra={"event": "coordination_error"})

    # -- rate limit ----------------------------------------------------------------
    async def check_rate(self, user: str) -> float:
        if self.rate_limit <= 0:
            return 0.0
        try:
            rows = await self._query(_RATE_SQL, {"user": user, "limit": self.rate_limit,
                                                 "window": self.rate_window})
        except CoordinationError as exc:
            self._warn(f"rate limit not applied: {exc}")
            return 0.0
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


#: Distinct sources a per-account counter remembers (as chat_server.throttle).
MAX_SOURCES = 16
#: The source key of attempts without an address.
NO_ADDRESS = "-"


class PostgresLoginThrottle:
    """The policies of :class:`chat_server.throttle.LoginThrottle` on counters in
    PostgreSQL (tables ``login_failures`` and ``login_trusted``), so failed
    logins on every replica add up and a successful login anywhere trusts its
    address everywhere."""

    def __init__(self, query: Query, warn: Callable[[str], None], *,
                 pair_policy: ThrottlePolicy = DEFAULT_PAIR_POLICY,
                 address_policy: ThrottlePolicy = DEFAULT_ADDRESS_POLICY,
                 account_policy: AccountPolicy = DEFAULT_ACCOUNT_POLICY) -> None:
        """``query`` runs a statement on the coordination's connection (raises
        :exc:`CoordinationError`); ``warn`` logs a failure (rate-limited)."""
        self._query = query
        self._warn = warn
        self.pair_policy = pair_policy
        self.address_policy = address_policy
        self.account_policy = account_policy
        self._next_prune = 0.0

    @staticmethod
    def _keys(user: str, address: Address) -> tuple[str, str | None, str, str]:
        """(pair key, address key or None, account key, source)."""
        source = client_key(address)
        pair = failure_key(f"pair:{user}\n{source or NO_ADDRESS}")
        return (pair, None if source is None else failure_key(f"address:{source}"),
                failure_key(f"account:{user}"), source or NO_ADDRESS)

    async def wait(self, user: str, address: Address) -> float:
        try:
            return await self._wait(user, address)
        except CoordinationError as exc:
            self._warn(f"login throttling not applied: {exc}")
            return 0.0

    async def failed(self, user: str, address: Address) -> None:
        try:
            await self._failed(user, address)
        except CoordinationError as exc:
            self._warn(f"a failed login was not counted: {exc}")

    async def succeeded(self, user: str, address: Address) -> None:
        try:
            await self._succeeded(user, address)
        except CoordinationError as exc:
            self._warn(f"a successful login was not recorded for throttling: {exc}")

    async def _wait(self, user: str, address: Address) -> float:
        pair, addr, account, source = self._keys(user, address)
        keys = [k for k in (pair, addr, account) if k is not None]
        window = max(self.pair_policy.window, self.address_policy.window,
                     self.account_policy.window)
        rows = {k: (int(n), float(age), int(sources or 0))
                for k, n, age, sources in await self._query(
                    _FAILURES_GET_SQL, {"keys": keys, "window": window})}

        def remaining(key: str | None, policy: ThrottlePolicy, min_sources: int = 0) -> float:
            found = rows.get(key) if key is not None else None
            if found is None or found[1] > policy.window or found[2] < min_sources:
                return 0.0
            return max(0.0, policy.delay(found[0]) - found[1])

        wait = max(remaining(pair, self.pair_policy), remaining(addr, self.address_policy))
        account_wait = remaining(account, self.account_policy, self.account_policy.min_addresses)
        if account_wait > 0 and not await self._trusted(user, source):
            wait = max(wait, account_wait)
        return wait

    async def _failed(self, user: str, address: Address) -> None:
        pair, addr, account, source = self._keys(user, address)
        for key, policy, sources in ((pair, self.pair_policy, []),
                                     (addr, self.address_policy, []),
                                     (account, self.account_policy, [source])):
            if key is not None:
                await self._query(_FAILURES_RECORD_SQL, {
                    "key": key, "window": policy.window, "sources": sources,
                    "max_sources": MAX_SOURCES})
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_prune:
            self._next_prune = loop.time() + PRUNE_SECONDS
            window = max(self.pair_policy.window, self.address_policy.window,
                         self.account_policy.window)
            await self._query(_FAILURES_PRUNE_SQL, {"window": window})

    async def _succeeded(self, user: str, address: Address) -> None:
        """This account and address start afresh; the address becomes trusted
        for the account (the other counters stay, as in LoginThrottle)."""
        pair, _addr, _account, source = self._keys(user, address)
        await self._query("DELETE FROM login_failures WHERE key = %(key)s", {"key": pair})
        await self._query(_TRUSTED_SET_SQL, {"user": user, "address": source})
        await self._query(_TRUSTED_PRUNE_SQL, {
            "user": user, "keep": self.account_policy.trusted_per_account})

    async def _trusted(self, user: str, source: str) -> bool:
        return bool(await self._query(_TRUSTED_GET_SQL, {
            "user": user, "address": source, "trust_for": self.account_policy.trust_for}))
