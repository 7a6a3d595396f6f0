"""
chat_server.store.base
~~~~~~~~~~~~~~~~~~~~~~

The data layer's contract: the records it stores, its errors, and the
:class:`Store` interface every engine implements. Nothing here knows about an
engine; :mod:`.sql` holds the one implementation of the operations, and
:mod:`.sqlite` / :mod:`.postgres` plug an engine into it.

Timestamps are timezone-aware UTC :class:`~datetime.datetime` objects.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Self

__all__ = [
    "MAX_CONVERSATION_LENGTH",
    "MAX_ENDED_SESSION_TOKENS_PER_USER",
    "MAX_SESSION_TOKENS_PER_USER",
    "MAX_USERNAME_LENGTH",
    "SessionToken",
    "Store",
    "StoreError",
    "TurnRecord",
    "TurnStatus",
    "UserExists",
    "UserRecord",
    "validate_username",
]

MAX_USERNAME_LENGTH = 64
#: Conversation ids longer than this are refused by the store (PostgreSQL's
#: btree index entries are limited to about 2.7 KB; one limit for both engines).
MAX_CONVERSATION_LENGTH = 256
#: Live session tokens per user; creating one more revokes the oldest, so
#: logging in in a loop cannot grow the table without bound.
MAX_SESSION_TOKENS_PER_USER = 50
#: Ended (used, logged out, revoked) tokens of a user remembered until they
#: expire, newest first, so that a copy presented again is recognised as a
#: replay (:meth:`Store.use_session_token`); older ones are forgotten.
MAX_ENDED_SESSION_TOKENS_PER_USER = 200


class TurnStatus(enum.StrEnum):
    """How a turn ended."""

    COMPLETE = "complete"  # the answer ended normally and was acknowledged
    CANCELLED = "cancelled"  # the user cancelled it
    ERROR = "error"  # the model failed
    INTERRUPTED = "interrupted"  # disconnect or shutdown


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


def as_utc(value: datetime | float) -> datetime:
    """Aware UTC datetime from a datetime (naive ones are taken as UTC) or Unix seconds."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class TurnRecord:
    """One stored exchange: the user's message and the model's (possibly
    partial) answer.

    ``created_at`` is when the user's message arrived, ``completed_at`` when the
    answer ended (``None`` if it never did). ``status`` says how it ended.
    ``backend`` names the model backend that answered (``None``: not recorded,
    as in turns of the first release). ``id`` is set by the store; ids grow
    with time within a store."""

    user: str
    conversation: str
    created_at: datetime
    completed_at: datetime | None
    model: str
    user_text: str
    answer_text: str
    prompt_tokens: int | None = None
    answer_tokens: int | None = None
    status: TurnStatus = TurnStatus.COMPLETE
    backend: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        try:
            status = TurnStatus(self.status)
        except ValueError:
            raise ValueError(
                f"turn status must be one of {', '.join(s.value for s in TurnStatus)}"
            ) from None
        object.__setattr__(self, "status", status)
        # Normalise to aware UTC so stored and loaded turns compare equal.
        object.__setattr__(self, "created_at", as_utc(self.created_at))
        if self.completed_at is not None:
            object.__setattr__(self, "completed_at", as_utc(self.completed_at))


@dataclass(frozen=True)
class UserRecord:
    """A user as the store holds it (``users list`` shows everything but the
    hash). ``message_count``, the number of turns the user has stored, is
    counted by :meth:`Store.list_users` only (``None`` elsewhere)."""

    name: str
    created_at: datetime
    password_hash: str = field(repr=False)
    disabled: bool = False
    last_login_at: datetime | None = None
    message_count: int | None = None  # counted by list_users only
    #: Counted up by every :meth:`Store.change_password` (not by
    #: :meth:`Store.upgrade_password_hash`): sessions logged in under an
    #: older one end.
    password_generation: int = 0


@dataclass(frozen=True)
class SessionToken:
    """A token issued at login, for a client to resume with instead of a
    password. ``token`` is the secret, handed to the client once; the store
    keeps only its SHA-256."""

    token: str = field(repr=False)
    user: str
    expires_at: datetime


class Store(ABC):
    """The operations the server and the CLI need, as coroutines. Every method
    raises :exc:`StoreError` (one line) when the engine fails; argument errors
    are :exc:`ValueError`. A store is opened by :func:`chat_server.store.open_store`
    (schema migrations run there) and closed with :meth:`close`."""

    #: ``"sqlite"`` or ``"postgresql"``.
    engine: str

    # -- users ---------------------------------------------------------------

    @abstractmethod
    async def add_user(self, name: str, password_hash: str) -> None:
        """Create a user. Raises :exc:`ValueError` for an invalid name and
        :exc:`UserExists` if the name is taken."""

    @abstractmethod
    async def get_user(self, name: str) -> UserRecord | None:
        """The user, or ``None`` for an unknown name."""

    @abstractmethod
    async def change_password(self, name: str, password_hash: str) -> bool:
        """Set a new password (its hash), count up the user's password
        generation and revoke their session tokens, in one transaction;
        ``False`` if the user does not exist."""

    @abstractmethod
    async def upgrade_password_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by a re-hash of the same password (stronger
        parameters); tokens stay valid. Does nothing and returns ``False`` if the
        stored hash is no longer ``old_hash`` (the password changed meanwhile)."""

    @abstractmethod
    async def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (revoking the user's session tokens, in one transaction) or
        enable a user; ``False`` if the user does not exist."""

    @abstractmethod
    async def record_login(self, name: str) -> None:
        """Note a successful login (``last_login_at``)."""

    @abstractmethod
    async def list_users(self) -> list[UserRecord]:
        """Every user, sorted by name."""

    @abstractmethod
    async def has_users(self) -> bool:
        """Whether any user exists (cheap, unlike :meth:`list_users`)."""

    @abstractmethod
    async def password_generations(self, names: Collection[str]) -> dict[str, int]:
        """The current :attr:`UserRecord.password_generation` of each name among
        ``names`` whose account exists and is enabled; the disabled and the
        missing are left out (their live sessions must end, like those logged in
        under an older generation). One indexed lookup per name, in batches."""

    @abstractmethod
    async def remove_user(self, name: str) -> bool:
        """Delete a user and everything of theirs; ``False`` if there was no such user."""

    # -- turns ---------------------------------------------------------------

    @abstractmethod
    async def save_turn(self, turn: TurnRecord, *, supersedes: int | None = None) -> int:
        """Store a turn durably (committed when this returns) and return its id.

        ``supersedes`` names an earlier turn the new one replaces when the user
        asked the same question again after it went unanswered: that turn is
        deleted in the same transaction, but only if it is the same user's, in
        the same conversation, was interrupted with no answer text, and has the
        same user text. Any other turn is kept."""

    @abstractmethod
    async def turns(
        self, user: str, conversation: str | None = None, *, after_id: int | None = None,
        before_id: int | None = None, status: TurnStatus | None = None,
        newest_first: bool = False, limit: int | None = None,
    ) -> list[TurnRecord]:
        """A user's turns (optionally of one conversation, optionally only
        those with an id above ``after_id`` and below ``before_id``, optionally
        only of one ``status``), oldest first (or newest first), at most
        ``limit`` of them. A reader of a history that may be long reads it in
        pages (``limit`` and an id bound), never all at once."""

    # -- session tokens ----------------------------------------------------------

    @abstractmethod
    async def create_session_token(self, user: str, lifetime: timedelta, *,
                                   follows: str | None = None) -> SessionToken:
        """Issue a random token for ``user``, valid for ``lifetime``; ``follows``
        is the token this login used (:meth:`use_session_token`), whose chain
        the new one continues. Also drops the user's expired tokens and their
        ended ones beyond :data:`MAX_ENDED_SESSION_TOKENS_PER_USER`, and
        revokes their oldest live ones beyond
        :data:`MAX_SESSION_TOKENS_PER_USER`. Raises :exc:`StoreError` for an
        unknown user."""

    @abstractmethod
    async def verify_session_token(self, token: str) -> str | None:
        """The user a token belongs to, or ``None`` when it is unknown, expired,
        revoked, or its user is disabled."""

    @abstractmethod
    async def use_session_token(self, token: str) -> str | None:
        """Log in with a token: the user it belongs to, as
        :meth:`verify_session_token` says, and the token ends in the same
        statement (a token logs in once: docs/SECURITY.md §2). Of two logins
        racing with one token, at most one gets the user. A token that has
        already ended and not yet expired is a replay: every live token of its
        chain (the ones logins with it and its successors were given) ends
        too, and the answer is ``None`` as for any refused token."""

    @abstractmethod
    async def revoke_session_token(self, token: str) -> bool:
        """Revoke one token (logout); ``False`` if it was not live."""

    # -- lifecycle -------------------------------------------------------------

    @property
    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store runs on (the number of migration steps applied)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the engine. Further calls raise :exc:`StoreError`; closing twice is fine."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
