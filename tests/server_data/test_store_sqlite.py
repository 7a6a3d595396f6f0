"""What only the SQLite engine has: the file, its journal and durability
settings, its permissions, and databases of the first release."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from chat_server.store import MIGRATIONS, SCHEMA_VERSION, StoreError, TurnStatus, open_store
from chat_server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

#: A database written by the first release's store (schema version 1, no
#: schema_version table): users alice and bob, three turns.
ROUND_ONE_DB = Path(__file__).parent / "data" / "round1.db"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def pragma(store: SQLiteStore, name: str) -> object:
    return await store._call(lambda: store._connection().execute(f"PRAGMA {name}").fetchone()[0])


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "chat.db"


async def test_creates_directory_wal_full_sync_foreign_keys(db_path: Path) -> None:
    assert not db_path.parent.exists()
    store = await open_store(db_path)
    try:
        assert isinstance(store, SQLiteStore)
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "foreign_keys") == 1
    finally:
        await store.close()
    # Checked from an independent connection: the settings are in the file.
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        versions = conn.execute("SELECT version, description FROM schema_version ORDER BY version")
        assert [tuple(r) for r in versions] == [
            (i + 1, step.description) for i, step in enumerate(MIGRATIONS)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"users", "turns", "schema_version"} <= tables
    finally:
        conn.close()


async def test_database_of_the_first_release_is_upgraded_without_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.db"
    shutil.copy(ROUND_ONE_DB, path)
    with caplog.at_level(logging.INFO, logger="chat_server.store"):
        store = await open_store(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert f"upgraded from schema version 1 to {SCHEMA_VERSION}" in caplog.text
        users = await store.list_users()
        assert [u.name for u in users] == ["alice", "bob"]
        alice = await store.get_user("alice")
        assert alice is not None
        assert PasswordHasher().verify(alice.password_hash, "round one password")
        turns = await store.turns("alice")
        assert [(t.conversation, t.user_text, t.answer_text, t.status) for t in turns] == [
            ("conv-a", "hello?", "Hi! 👋 How can I help?", TurnStatus.COMPLETE),
            ("conv-a", "and then", "partial ans", TurnStatus.INTERRUPTED),
        ]
        assert turns[0].created_at == datetime(2025, 4, 1, 9, 30, 0, 250000, tzinfo=UTC)
        assert (turns[0].prompt_tokens, turns[0].answer_tokens) == (12, 7)
        assert turns[1].completed_at is None
        (bob_turn,) = await store.turns("bob")
        assert bob_turn.status is TurnStatus.CANCELLED
        # New turns continue the id sequence.
        new_id = await store.save_turn(
            type(bob_turn)("bob", "conv-b", datetime.now(UTC), None, "m", "q", "a"))
        assert new_id > bob_turn.id  # type: ignore[operator]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["user_version", "schema_version"])
async def test_newer_schema_is_refused(db_path: Path, how: str) -> None:
    await (await open_store(db_path)).close()
    conn = sqlite3.connect(db_path)
    if how == "user_version":  # what a first-release server would check
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    else:
        conn.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this server supports"):
        await open_store(db_path)


async def test_failed_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    shutil.copy(ROUND_ONE_DB, path)
    # Something in the way of step 2 (renaming turns.user to username): the
    # whole upgrade must roll back, bookkeeping included.
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE turns ADD COLUMN username TEXT")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="duplicate column") as info:
        await open_store(path)
    assert "\n" not in str(info.value)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "schema_version" not in tables
        assert conn.execute("SELECT COUNT(*) FROM turns WHERE user = 'alice'").fetchone()[0] == 2
    finally:
        conn.close()


# -- permissions (the file holds every chat and every password hash) -------------


async def test_new_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chat.db"
    old_umask = os.umask(0o022)
    try:
        store = await open_store(path)
        await store.add_user("alice", "h")  # makes SQLite create -wal and -shm
        try:
            assert mode(path.parent) == 0o700
            for f in (path, path.with_name("chat.db-wal"), path.with_name("chat.db-shm")):
                assert f.exists(), f
                assert mode(f) == 0o600, (f, oct(mode(f)))
        finally:
            await store.close()
    finally:
        os.umask(old_umask)


async def test_loose_permissions_are_fixed_at_start_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "data"
    path = directory / "chat.db"
    store = await open_store(path)
    await store.add_user("alice", "h")
    # Keep -wal and -shm: open a second connection that holds them.
    holder = sqlite3.connect(path)
    holder.execute("SELECT 1 FROM users").fetchall()
    await store.close()
    files = [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))]
    files = [f for f in files if f.exists()]
    assert len(files) == 3
    directory.chmod(0o755)
    for f in files:
        f.chmod(0o644)
    try:
        with caplog.at_level(logging.WARNING, logger="chat_server.store"):
            store = await open_store(path)
        await store.close()
    finally:
        holder.close()
    assert mode(directory) == 0o700
    for f in files:
        if f.exists():
            assert mode(f) == 0o600, f
    for f in (directory, *files):
        assert f"restricted {f} from mode" in caplog.text, caplog.text


async def test_shared_directory_is_left_alone_but_the_file_is_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: not ours to close
    with caplog.at_level(logging.WARNING, logger="chat_server.store"):
        store = await open_store(shared / "chat.db")
    await store.close()
    assert mode(shared) == 0o1777
    assert mode(shared / "chat.db") == 0o600
    assert "accessible to other users" in caplog.text


# -- unusable files: one clear line ----------------------------------------------


def _make_unwritable(path: Path) -> Callable[[], None]:
    """Make ``path`` unwritable even for root (who ignores file modes): the
    immutable flag when we are root, the mode bits otherwise. Returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o600)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_unwritable_file_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    await (await open_store(path)).close()
    undo = _make_unwritable(path)
    try:
        with pytest.raises(StoreError) as info:
            await open_store(path)
        assert "not writable" in str(info.value) and "\n" not in str(info.value)
    finally:
        undo()


async def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory") as info:
        await open_store(tmp_path)
    assert "\n" not in str(info.value)


async def test_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create database directory") as info:
        await open_store(blocker / "chat.db")
    assert "\n" not in str(info.value)


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not sqlite, just some text " * 200)
    with pytest.raises(StoreError, match="cannot open database") as info:
        await open_store(path)
    assert "\n" not in str(info.value)


async def test_store_is_usable_from_one_event_loop_after_another(tmp_path: Path) -> None:
    # The CLI and tests open a store in one asyncio.run() and use it in the next.
    import asyncio

    store = await open_store(tmp_path / "chat.db")
    await store.add_user("alice", "h")

    def in_new_loop() -> list[str]:
        async def names() -> list[str]:
            results = await asyncio.gather(*(store.list_users() for _ in range(5)))
            return [u.name for u in results[0]]

        return asyncio.run(names())

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_new_loop).result(timeout=30) == ["alice"]
        assert pool.submit(in_new_loop).result(timeout=30) == ["alice"]
    await store.close()
