"""
chat_server.store.sql
~~~~~~~~~~~~~~~~~~~~~

The one implementation of the :class:`~.base.Store` operations, in SQL both
engines understand. An engine supplies four things: a single statement in its
own transaction (:meth:`SQLStore._query`), a write transaction
(:meth:`SQLStore._transaction`), and the conversion of timestamps to and from
its column type. Queries use ``?`` placeholders; the PostgreSQL engine rewrites
them. Driver errors reach this module already translated: a violated constraint
is a :exc:`ConstraintError`, anything else a one-line :exc:`~.base.StoreError`.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from .base import (
    MAX_CONVERSATION_LENGTH,
    MAX_ENDED_SESSION_TOKENS_PER_USER,
    MAX_SESSION_TOKENS_PER_USER,
    SessionToken,
    Store,
    StoreError,
    TurnRecord,
    TurnStatus,
    UserExists,
    UserRecord,
    validate_username,
)

__all__ = ["ConstraintError", "SQLStore", "Tx"]

Row = tuple[Any, ...]


class ConstraintError(StoreError):
    """A statement violated a constraint (``kind``: unique, foreign_key or check)."""

    def __init__(self, kind: Literal["unique", "foreign_key", "check"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Tx(Protocol):
    """Statements inside one transaction."""

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...


_TURN_COLUMNS = (
    "id, username, conversation, created_at, completed_at, model, user_text, "
    "answer_text, prompt_tokens, answer_tokens, status, backend"
)
_USER_COLUMNS = "name, created_at, password_hash, disabled, last_login_at, password_generation"
#: Names per statement in password_generations (SQLite allows 32766 parameters, PostgreSQL 65535).
_LOOKUP_BATCH = 500
#: Longer strings are not tokens we issued (ours are 43 characters).
_MAX_TOKEN_LENGTH = 256


def _plausible_token(token: object) -> bool:
    """Whether ``token`` is worth a look-up (a non-empty string of sane length)."""
    return isinstance(token, str) and 0 < len(token) <= _MAX_TOKEN_LENGTH


def _token_hash(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough to make a stolen
    # table useless (no password-style stretching needed), and lookups stay cheap.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; both engines store U+FFFD instead,
    # so a history reads the same whichever engine kept it.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _turn_filter(user: str, conversation: str | None, after_id: int | None,
                 before_id: int | None, status: TurnStatus | None) -> tuple[str, list[Any]]:
    where = "username = ?"
    params: list[Any] = [user]
    if conversation is not None:
        where += " AND conversation = ?"
        params.append(_text(conversation))
    if after_id is not None:
        where += " AND id > ?"
        params.append(after_id)
    if before_id is not None:
        where += " AND id < ?"
        params.append(before_id)
    if status is not None:
        where += " AND status = ?"
        params.append(TurnStatus(status).value)
    return where, params


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SQLStore(Store):
    """:class:`Store` over an engine's four primitives (see the module docstring)."""

    #: Where "now" comes from (token expiry, login and creation times); tests
    #: pass their own clock to :func:`~chat_server.store.open_store`.
    clock: Callable[[], datetime] = staticmethod(_utc_now)

    # -- engine primitives -------------------------------------------------------

    @abstractmethod
    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement in its own transaction; its rows (empty if none)."""

    @abstractmethod
    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; the number of rows it changed."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back on error."""

    @abstractmethod
    def _to_db_time(self, value: datetime) -> Any: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    def _now(self) -> datetime:
        return self.clock()

    def _opt_time(self, value: Any) -> datetime | None:
        return None if value is None else self._from_db_time(value)

    # -- users ----------------------------------------------------------------------

    async def add_user(self, name: str, password_hash: str) -> None:
        validate_username(name)
        if not password_hash:
            raise ValueError("password hash must not be empty")
        try:
            await self._execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                (name, password_hash, self._to_db_time(self._now())),
            )
        except ConstraintError as exc:
            if exc.kind == "unique":
                raise UserExists(f"user {name!r} already exists") from None
            raise

    async def get_user(self, name: str) -> UserRecord | None:
        rows = await self._query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return self._user(rows[0]) if rows else None

    def _user(self, row: Row, message_count: int | None = None) -> UserRecord:
        return UserRecord(
            name=str(row[0]), created_at=self._from_db_time(row[1]), password_hash=str(row[2]),
            disabled=bool(row[3]), last_login_at=self._opt_time(row[4]),
            password_generation=int(row[5]), message_count=message_count,
        )

    async def change_password(self, name: str, password_hash: str) -> bool:
        if not password_hash:
            raise ValueError("password hash must not be empty")
        async with self._transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET password_hash = ?, password_generation = password_generation + 1 "
                "WHERE name = ?", (password_hash, name)
            )
            if changed:
                await self._revoke_all(tx, name)
        return changed > 0

    async def upgrade_password_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        if not new_hash:
            raise ValueError("password hash must not be empty")
        changed = await self._execute(
            "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
            (new_hash, name, old_hash),
        )
        return changed > 0

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        async with self._transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET disabled = ? WHERE name = ?", (bool(disabled), name)
            )
            if changed and disabled:
                await self._revoke_all(tx, name)
        return changed > 0

    async def record_login(self, name: str) -> None:
        await self._execute(
            "UPDATE users SET last_login_at = ? WHERE name = ?",
            (self._to_db_time(self._now()), name),
        )

    async def list_users(self) -> list[UserRecord]:
        rows = await self._query(
            f"SELECT {_USER_COLUMNS}, "
            "(SELECT COUNT(*) FROM turns WHERE turns.username = users.name) "
            "FROM users ORDER BY name"
        )
        return [self._user(r, int(r[6])) for r in rows]

    async def has_users(self) -> bool:
        return bool(await self._query("SELECT 1 FROM users LIMIT 1"))

    async def password_generations(self, names: Collection[str]) -> dict[str, int]:
        wanted = sorted(set(names))
        active: dict[str, int] = {}
        # Each batch is one statement of its own (the engine is free for other
        # callers in between), well under either engine's parameter limit.
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            batch = wanted[start:start + _LOOKUP_BATCH]
            rows = await self._query(
                "SELECT name, password_generation FROM users "
                f"WHERE disabled = ? AND name IN ({', '.join('?' * len(batch))})",
                (False, *batch),
            )
            active.update((str(row[0]), int(row[1])) for row in rows)
        return active

    async def remove_user(self, name: str) -> bool:
        # ON DELETE CASCADE removes the user's turns in the same statement, hence
        # the same transaction: the right to be forgotten outweighs orphaned history.
        return await self._execute("DELETE FROM users WHERE name = ?", (name,)) > 0

    # -- turns ----------------------------------------------------------------------

    async def save_turn(self, turn: TurnRecord, *, supersedes: int | None = None) -> int:
        if len(turn.conversation) > MAX_CONVERSATION_LENGTH:
            raise StoreError(
                f"cannot save turn: conversation id longer than {MAX_CONVERSATION_LENGTH} characters"
            )
        insert = (
            "INSERT INTO turns (username, conversation, created_at, completed_at, model, "
            "user_text, answer_text, prompt_tokens, answer_tokens, status, backend) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                turn.user, _text(turn.conversation), self._to_db_time(turn.created_at),
                None if turn.completed_at is None else self._to_db_time(turn.completed_at),
                turn.model, _text(turn.user_text), _text(turn.answer_text),
                turn.prompt_tokens, turn.answer_tokens, turn.status.value,
                None if turn.backend is None else _text(turn.backend),
            ),
        )
        try:
            if supersedes is None:  # the common case: one statement, no transaction
                rows = await self._query(*insert)
            else:
                async with self._transaction() as tx:
                    rows = await tx.query(*insert)
                    await tx.execute(
                        "DELETE FROM turns WHERE id = ? AND id < ? AND username = ? "
                        "AND conversation = ? AND status = ? AND answer_text = '' "
                        "AND user_text = ?",
                        (supersedes, rows[0][0], turn.user, _text(turn.conversation),
                         TurnStatus.INTERRUPTED.value, _text(turn.user_text)),
                    )
        except ConstraintError as exc:
            if exc.kind == "foreign_key":
                # The user was removed while the conversation was going on.
                raise StoreError(f"cannot save turn: no user {turn.user!r}") from None
            raise StoreError(f"cannot save turn: {exc}") from None
        return int(rows[0][0])

    async def turns(
        self, user: str, conversation: str | None = None, *, after_id: int | None = None,
        before_id: int | None = None, status: TurnStatus | None = None,
        newest_first: bool = False, limit: int | None = None,
    ) -> list[TurnRecord]:
        where, params = _turn_filter(user, conversation, after_id, before_id, status)
        order = "id DESC" if newest_first else "id"
        if limit is not None:
            if limit < 1:
                raise ValueError("limit must be >= 1")
            order += f" LIMIT {int(limit)}"
        rows = await self._query(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE {where} ORDER BY {order}", params
        )
        return [self._turn(row) for row in rows]

    def _turn(self, row: Row) -> TurnRecord:
        return TurnRecord(
            id=int(row[0]), user=row[1], conversation=row[2],
            created_at=self._from_db_time(row[3]), completed_at=self._opt_time(row[4]),
            model=row[5], user_text=row[6], answer_text=row[7],
            prompt_tokens=row[8], answer_tokens=row[9], status=row[10], backend=row[11],
        )

    # -- session tokens ------------------------------------------------------------------

    async def create_session_token(self, user: str, lifetime: timedelta, *,
                                   follows: str | None = None) -> SessionToken:
        if lifetime <= timedelta(0):
            raise ValueError("token lifetime must be positive")
        token = secrets.token_urlsafe(32)
        issued_at = self._now()
        expires_at = issued_at + lifetime
        now = self._to_db_time(issued_at)
        async with self._transaction() as tx:
            await tx.execute(
                "DELETE FROM session_tokens WHERE username = ? AND expires_at <= ?", (user, now))
            family = None
            if follows is not None and _plausible_token(follows):
                # The chain's first token: the followed token's family, or itself.
                rows = await tx.query(
                    "SELECT COALESCE(family, token_hash) FROM session_tokens "
                    "WHERE token_hash = ? AND username = ?", (_token_hash(follows), user))
                family = str(rows[0][0]) if rows else None
            try:
                await tx.execute(
                    "INSERT INTO session_tokens "
                    "(token_hash, username, created_at, expires_at, family) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (_token_hash(token), user, now, self._to_db_time(expires_at), family),
                )
            except ConstraintError as exc:
                if exc.kind == "foreign_key":
                    raise StoreError(f"cannot issue a session token: no user {user!r}") from None
                raise
            live = await tx.query(
                "SELECT token_hash FROM session_tokens WHERE username = ? AND revoked_at IS NULL "
                "ORDER BY created_at DESC, token_hash",
                (user,),
            )
            for (old,) in live[MAX_SESSION_TOKENS_PER_USER:]:
                await tx.execute(
                    "UPDATE session_tokens SET revoked_at = ? WHERE token_hash = ?", (now, old)
                )
            ended = await tx.query(
                "SELECT token_hash FROM session_tokens WHERE username = ? "
                "AND revoked_at IS NOT NULL ORDER BY revoked_at DESC, token_hash",
                (user,),
            )
            for (old,) in ended[MAX_ENDED_SESSION_TOKENS_PER_USER:]:
                await tx.execute("DELETE FROM session_tokens WHERE token_hash = ?", (old,))
        return SessionToken(token=token, user=user, expires_at=expires_at)

    async def verify_session_token(self, token: str) -> str | None:
        if not _plausible_token(token):
            return None
        rows = await self._query(
            "SELECT s.username FROM session_tokens s JOIN users u ON u.name = s.username "
            "WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? "
            "AND u.disabled = ?",
            (_token_hash(token), self._to_db_time(self._now()), False),
        )
        return str(rows[0][0]) if rows else None

    async def use_session_token(self, token: str) -> str | None:
        if not _plausible_token(token):
            return None
        now = self._to_db_time(self._now())
        hashed = _token_hash(token)
        # One statement: of two logins racing with the same token, the second
        # finds it revoked (both engines lock the row the UPDATE changes).
        rows = await self._query(
            "UPDATE session_tokens SET revoked_at = ? "
            "WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ? "
            "AND username IN (SELECT name FROM users WHERE disabled = ?) "
            "RETURNING username",
            (now, hashed, now, False),
        )
        if rows:
            return str(rows[0][0])
        # Ended but not expired: a copy of a token that was used (or logged
        # out, or revoked) is being replayed, by whoever did not use it first.
        # Nobody can tell the thief from the owner, so the chain ends: the
        # thief's successors cannot log in again, and the owner logs in with
        # the password (RFC 9700, refresh token rotation).
        ended = await self._query(
            "SELECT username, COALESCE(family, token_hash) FROM session_tokens "
            "WHERE token_hash = ? AND revoked_at IS NOT NULL AND expires_at > ?",
            (hashed, now),
        )
        if ended:
            user, family = ended[0]
            await self._execute(
                "UPDATE session_tokens SET revoked_at = ? WHERE username = ? "
                "AND revoked_at IS NULL AND COALESCE(family, token_hash) = ?",
                (now, user, family),
            )
        return None

    async def revoke_session_token(self, token: str) -> bool:
        if not _plausible_token(token):
            return False
        now = self._to_db_time(self._now())
        changed = await self._execute(
            "UPDATE session_tokens SET revoked_at = ? "
            "WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?",
            (now, _token_hash(token), now),
        )
        return changed > 0

    async def _revoke_all(self, tx: Tx, user: str) -> None:
        await tx.execute(
            "UPDATE session_tokens SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            (self._to_db_time(self._now()), user),
        )
