"""
chat_server.store
~~~~~~~~~~~~~~~~~

The data layer: users and chat turns, behind one async interface
(:class:`Store`) with two engines, chosen by ``CHAT_DB``: a SQLite file (the
default) or a PostgreSQL server (a ``postgresql://`` URL). The schema is
migrated at open (:mod:`.migrations`). The contract is in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from .base import (
    MAX_CONVERSATION_LENGTH,
    MAX_ENDED_SESSION_TOKENS_PER_USER,
    MAX_SESSION_TOKENS_PER_USER,
    MAX_USERNAME_LENGTH,
    SessionToken,
    Store,
    StoreError,
    TurnRecord,
    TurnStatus,
    UserExists,
    UserRecord,
    validate_username,
)
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .sql import SQLStore

__all__ = [
    "MAX_CONVERSATION_LENGTH",
    "MAX_ENDED_SESSION_TOKENS_PER_USER",
    "MAX_SESSION_TOKENS_PER_USER",
    "MAX_USERNAME_LENGTH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SessionToken",
    "Store",
    "StoreError",
    "TurnRecord",
    "TurnStatus",
    "UserExists",
    "UserRecord",
    "is_database_url",
    "open_store",
    "validate_username",
]


def is_database_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``CHAT_DB`` names a PostgreSQL server rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def open_store(
    target: str | os.PathLike[str],
    *,
    password: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Store:
    """Open the store ``CHAT_DB`` names and bring its schema up to date.

    ``target`` is a SQLite file path or a ``postgresql://`` URL; ``password``
    (PostgreSQL only) is passed to the server separately from the URL, so it is
    never part of a string that could be logged. ``clock`` (aware UTC
    datetimes) replaces the wall clock, for tests. Raises :exc:`StoreError`."""
    store: SQLStore
    if is_database_url(target):
        from .postgres import PostgresStore  # psycopg is imported only when used

        store = await PostgresStore.open(str(target), password=password)
    else:
        from .sqlite import SQLiteStore

        store = await SQLiteStore.open(target)
    if clock is not None:
        store.clock = clock
    return store
