"""
chat_server.store.migrations
~~~~~~~~~~~~~~~~~~~~~~~~~~~~

The schema, as numbered steps. Step ``n`` (1-based) moves a database from
version ``n - 1`` to ``n``; both engines run the same steps, each written in its
engine's dialect. Applied steps are recorded in the ``schema_version`` table
(one row per step: version, description, when). The engines run the steps at
start, inside one transaction, under a lock that makes concurrent starts
(several replicas, or the CLI next to the server) wait instead of racing:
SQLite's write lock (``BEGIN IMMEDIATE``), a PostgreSQL advisory lock.

SQLite databases of the first release have no ``schema_version`` table; their
version is ``PRAGMA user_version`` (1), recorded into the table on their first
upgrade. SQLite keeps ``user_version`` equal to the latest step, so a server of
the first release refuses a newer database instead of misreading it.

Rules: never edit a released step; append a new one. Statements are separated by
``;`` and contain no ``;`` or ``%`` themselves.

Timestamps: SQLite stores Unix seconds (REAL), PostgreSQL ``timestamptz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Step", "statements"]


@dataclass(frozen=True)
class Step:
    description: str
    sqlite: str
    postgres: str


MIGRATIONS: Sequence[Step] = (
    Step(
        "users and turns",
        sqlite="""
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
        postgres="""
        CREATE TABLE users (
            name          TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE turns (
            id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            "user"        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            conversation  TEXT NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL,
            completed_at  TIMESTAMPTZ,
            model         TEXT NOT NULL,
            user_text     TEXT NOT NULL,
            answer_text   TEXT NOT NULL,
            prompt_tokens INTEGER,
            answer_tokens INTEGER,
            status        TEXT NOT NULL
                          CHECK (status IN ('complete', 'cancelled', 'error', 'interrupted'))
        );
        CREATE INDEX turns_by_user ON turns ("user", conversation, id);
        """,
    ),
    Step(
        # "user" is a reserved word in SQL: in psql, SELECT user FROM turns
        # returns the session's role name, not the column.
        "turns.user renamed to turns.username",
        sqlite="ALTER TABLE turns RENAME COLUMN user TO username",
        postgres='ALTER TABLE turns RENAME COLUMN "user" TO username',
    ),
    Step(
        "turns.backend: which model backend answered",
        sqlite="ALTER TABLE turns ADD COLUMN backend TEXT",
        postgres="ALTER TABLE turns ADD COLUMN backend TEXT",
    ),
    Step(
        "users.disabled and users.last_login_at",
        sqlite="""
        ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
        ALTER TABLE users ADD COLUMN last_login_at REAL
        """,
        postgres="""
        ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
        ALTER TABLE users ADD COLUMN last_login_at TIMESTAMPTZ
        """,
    ),
    Step(
        "session_tokens: login tokens of reconnecting clients (SHA-256 of the token)",
        sqlite="""
        CREATE TABLE session_tokens (
            token_hash TEXT PRIMARY KEY,
            username   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE INDEX session_tokens_by_user ON session_tokens (username, created_at)
        """,
        postgres="""
        CREATE TABLE session_tokens (
            token_hash TEXT PRIMARY KEY,
            username   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        );
        CREATE INDEX session_tokens_by_user ON session_tokens (username, created_at)
        """,
    ),
    Step(
        # Used by chat_server.coordination on PostgreSQL only (replicas share
        # them); a SQLite server keeps this state in memory, the tables stay empty.
        "rate_windows, login_failures, login_trusted: rate limit and login throttling shared by replicas",
        sqlite="""
        CREATE TABLE rate_windows (
            username TEXT PRIMARY KEY,
            sent_at  TEXT NOT NULL
        );
        CREATE TABLE login_failures (
            key          TEXT PRIMARY KEY,
            failures     INTEGER NOT NULL,
            last_failure REAL NOT NULL,
            sources      TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX login_failures_by_time ON login_failures (last_failure);
        CREATE TABLE login_trusted (
            username TEXT NOT NULL,
            address  TEXT NOT NULL,
            since    REAL NOT NULL,
            PRIMARY KEY (username, address)
        )
        """,
        postgres="""
        CREATE TABLE rate_windows (
            username TEXT PRIMARY KEY,
            sent_at  TIMESTAMPTZ[] NOT NULL
        );
        CREATE TABLE login_failures (
            key          TEXT PRIMARY KEY,
            failures     INTEGER NOT NULL,
            last_failure TIMESTAMPTZ NOT NULL,
            sources      TEXT[] NOT NULL DEFAULT '{}'
        );
        CREATE INDEX login_failures_by_time ON login_failures (last_failure);
        CREATE TABLE login_trusted (
            username TEXT NOT NULL,
            address  TEXT NOT NULL,
            since    TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (username, address)
        )
        """,
    ),
    Step(
        # Counted up by every password change (not by a re-hash of the same
        # password): a live session logged in under an older generation ends
        # (chat_server.accounts).
        "users.password_generation: sessions end when the password changes",
        sqlite="ALTER TABLE users ADD COLUMN password_generation INTEGER NOT NULL DEFAULT 0",
        postgres="ALTER TABLE users ADD COLUMN password_generation INTEGER NOT NULL DEFAULT 0",
    ),
    Step(
        # The hash of the first token of a chain of token logins (NULL: the
        # token's own): a token that is presented again after it was used ends
        # every token of its chain (docs/SECURITY.md §2, reuse detection).
        "session_tokens.family: a replayed token ends its chain",
        sqlite="ALTER TABLE session_tokens ADD COLUMN family TEXT",
        postgres="ALTER TABLE session_tokens ADD COLUMN family TEXT",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """The statements of one step's script."""
    return [s.strip() for s in script.split(";") if s.strip()]
