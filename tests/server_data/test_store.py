"""SQLiteStore: schema, WAL, users, turns, errors as one-line StoreError."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chat_server.store import (
    MIGRATIONS,
    SQLiteStore,
    Store,
    StoreError,
    Turn,
    UserExists,
    open_store,
    validate_username,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def make_turn(user: str = "alice", conversation: str = "c1", n: int = 0, **kw: object) -> Turn:
    fields: dict[str, object] = {
        "user": user,
        "conversation": conversation,
        "created_at": T0 + timedelta(seconds=n),
        "completed_at": T0 + timedelta(seconds=n, milliseconds=500),
        "model": "llama3.2",
        "user_text": f"question {n}",
        "answer_text": f"answer {n} ✓",
        "prompt_tokens": 10 + n,
        "answer_tokens": 20 + n,
        "status": "complete",
    }
    fields.update(kw)
    return Turn(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "chat.db"


@pytest.fixture
def store(db_path: Path):
    s = SQLiteStore(db_path)
    yield s
    s.close()


def test_creates_parent_directory_wal_full_sync_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with SQLiteStore(db_path) as s:
        assert isinstance(s, Store)
        assert db_path.exists()
        assert s.journal_mode == "wal"
        assert s.schema_version == len(MIGRATIONS) >= 1
    # Checked from an independent connection: the settings are in the file.
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"users", "turns"} <= tables
    finally:
        conn.close()


def test_synchronous_full_and_foreign_keys(store: SQLiteStore) -> None:
    with store._locked() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with SQLiteStore(db_path) as s:
        s.add_user("alice", "h1")
        s.save_turn(make_turn())
    with open_store(db_path) as s:
        assert s.get_password_hash("alice") == "h1"
        assert len(s.turns("alice")) == 1


def test_users_lifecycle(store: SQLiteStore) -> None:
    assert store.get_password_hash("bob") is None
    store.add_user("bob", "hash-b")
    store.add_user("alice", "hash-a")
    assert store.get_password_hash("bob") == "hash-b"
    with pytest.raises(UserExists, match="'bob' already exists"):
        store.add_user("bob", "other")
    assert store.get_password_hash("bob") == "hash-b"  # unchanged

    users = store.list_users()
    assert [name for name, _ in users] == ["alice", "bob"]
    for _, created in users:
        assert created.tzinfo is not None
        assert abs((datetime.now(UTC) - created).total_seconds()) < 3600

    assert store.set_password_hash("bob", "hash-b2") is True
    assert store.get_password_hash("bob") == "hash-b2"
    assert store.set_password_hash("nobody", "x") is False

    assert store.remove_user("bob") is True
    assert store.remove_user("bob") is False
    assert store.get_password_hash("bob") is None
    assert [name for name, _ in store.list_users()] == ["alice"]


def test_user_names_are_case_sensitive(store: SQLiteStore) -> None:
    store.add_user("Alice", "h")
    assert store.get_password_hash("alice") is None


@pytest.mark.parametrize("name", ["a", "alice", "x" * 64, "ünïcødé", "a.b-c_d@e", "名前"])
def test_valid_user_names(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "at most 64"),
        ("has space", "spaces"),
        ("tab\there", "spaces"),
        ("new\nline", "spaces"),
        ("nul\x00", "control"),
        ("esc\x1b[31m", "control"),
        ("zero\u200bwidth", "control"),
        ("nbsp\u00a0", "spaces"),
    ],
)
def test_invalid_user_names(store: SQLiteStore, name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        validate_username(name)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        store.add_user(name, "h")
    assert store.list_users() == []


def test_turns_round_trip_in_order(store: SQLiteStore) -> None:
    store.add_user("alice", "h")
    saved = [
        make_turn(n=0),
        make_turn(n=1, conversation="c2", status="cancelled", prompt_tokens=None,
                  answer_tokens=None),
        make_turn(n=2, status="error", completed_at=None, answer_text=""),
        make_turn(n=3, conversation="c2", status="interrupted"),
    ]
    ids = [store.save_turn(t) for t in saved]
    assert ids == sorted(ids) and len(set(ids)) == 4

    loaded = store.turns("alice")
    assert [t.id for t in loaded] == ids
    for original, back, turn_id in zip(saved, loaded, ids, strict=True):
        assert back == _with_id(original, turn_id)
        assert back.created_at.tzinfo is not None

    assert [t.id for t in store.turns("alice", "c2")] == [ids[1], ids[3]]
    assert store.turns("alice", "nope") == []
    assert store.turns("bob") == []
    assert store.conversations("alice") == ["c1", "c2"]
    assert store.conversations("bob") == []


def test_turns_limit_returns_most_recent_oldest_first(store: SQLiteStore) -> None:
    store.add_user("alice", "h")
    ids = [store.save_turn(make_turn(n=i)) for i in range(6)]
    assert [t.id for t in store.turns("alice", limit=3)] == ids[3:]
    assert [t.id for t in store.turns("alice", "c1", limit=10)] == ids
    assert store.turns("alice", limit=0) == []


def test_naive_and_epoch_timestamps_are_normalised_to_utc() -> None:
    naive = make_turn(created_at=datetime(2025, 1, 1, 8, 0), completed_at=1735718400.0)
    assert naive.created_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert naive.completed_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def test_turn_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status"):
        make_turn(status="done")


def test_remove_user_deletes_their_turns(store: SQLiteStore) -> None:
    store.add_user("alice", "h")
    store.add_user("bob", "h")
    store.save_turn(make_turn("alice"))
    store.save_turn(make_turn("bob"))
    assert store.remove_user("alice")
    assert store.turns("alice") == []
    assert len(store.turns("bob")) == 1
    with store._locked() as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 1


def test_save_turn_for_removed_user_is_a_store_error(store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match="no user 'ghost'"):
        store.save_turn(make_turn("ghost"))


def test_concurrent_writers_through_one_store(store: SQLiteStore) -> None:
    store.add_user("alice", "h")
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                store.save_turn(make_turn(conversation=f"c{k}", n=i))
                store.turns("alice", f"c{k}", limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    turns = store.turns("alice")
    assert len(turns) == 160
    assert len({t.id for t in turns}) == 160
    for k in range(4):
        assert [t.user_text for t in store.turns("alice", f"c{k}")] == [
            f"question {i}" for i in range(40)
        ]


def test_second_store_on_same_file_sees_commits(db_path: Path) -> None:
    # The CLI opens its own connection while the server runs (WAL).
    with SQLiteStore(db_path) as server, SQLiteStore(db_path) as cli:
        cli.add_user("alice", "h")
        assert server.get_password_hash("alice") == "h"
        server.save_turn(make_turn())
        assert len(cli.turns("alice")) == 1
        assert cli.remove_user("alice")
        assert server.turns("alice") == []


def test_read_only_store_reads_but_refuses_writes(db_path: Path) -> None:
    with SQLiteStore(db_path) as s:
        s.add_user("alice", "h")
        s.save_turn(make_turn())
    with SQLiteStore(db_path, read_only=True) as ro:
        assert len(ro.turns("alice")) == 1
        with pytest.raises(StoreError) as info:
            ro.save_turn(make_turn(n=1))
        message = str(info.value)
        assert "\n" not in message and "readonly" in message.replace("read-only", "readonly")
        with pytest.raises(StoreError):
            ro.add_user("bob", "h")
        with pytest.raises(StoreError):
            ro.set_password_hash("alice", "x")
        # The store keeps working for reads after a failed write.
        assert ro.get_password_hash("alice") == "h"


def test_read_only_open_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        SQLiteStore(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()


def _make_unwritable(path: Path) -> Callable[[], None]:
    """Make ``path`` unwritable even for root (who ignores file modes): the
    immutable flag when we are root, the mode bits otherwise. Returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_file_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    SQLiteStore(path).close()
    undo = _make_unwritable(path)
    try:
        with pytest.raises(StoreError) as info:
            SQLiteStore(path)
        assert "not writable" in str(info.value) and "\n" not in str(info.value)
    finally:
        undo()


def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory") as info:
        SQLiteStore(tmp_path)
    assert "\n" not in str(info.value)


def test_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create database directory") as info:
        SQLiteStore(blocker / "chat.db")
    assert "\n" not in str(info.value)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not sqlite, just some text " * 200)
    with pytest.raises(StoreError, match="cannot open database") as info:
        SQLiteStore(path)
    assert "\n" not in str(info.value)


def test_newer_schema_is_refused(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this server supports"):
        SQLiteStore(db_path)


def test_closed_store_raises_store_error(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.list_users()


def _with_id(turn: Turn, turn_id: int) -> Turn:
    import dataclasses

    return dataclasses.replace(turn, id=turn_id)
