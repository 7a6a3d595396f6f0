"""chat_server.bootstrap on each engine: servers starting at once create one
first user and one password file (the real one); leftovers of a crash are
recovered or removed."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import stat
from pathlib import Path

import pytest
from chat_server.bootstrap import (
    PASSWORD_ALPHABET,
    InitialPassword,
    InitialPasswordCheck,
    ensure_first_user,
    generate_password,
    initial_password_works,
    read_initial_password,
)
from chat_server.config import Settings
from chat_server.store import Store, open_store

pytestmark = pytest.mark.anyio

#: Stores opened separately, as separate server processes would have them.
REPLICAS = 6


def settings_for(target: str, data_dir: Path, **changes: object) -> Settings:
    base = Settings.from_env({
        "CHAT_DB": target, "CHAT_DATA_DIR": str(data_dir),
        # Real argon2id, but cheap: the race is about the database, not the hash.
        "CHAT_ARGON2_TIME_COST": "1", "CHAT_ARGON2_MEMORY_KIB": "1024",
    })
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def open_replicas(target: str, n: int) -> list[Store]:
    return [await open_store(target) for _ in range(n)]


async def first_starts(target: str, data_dirs: list[Path]) -> list[bool]:
    stores = await open_replicas(target, len(data_dirs))
    try:
        return list(await asyncio.gather(*(
            ensure_first_user(store, s, s.argon2_hasher())
            for store, s in zip(stores, (settings_for(target, d) for d in data_dirs), strict=True)
        )))
    finally:
        for store in stores:
            await store.close()


def test_generated_passwords_are_typeable_and_strong() -> None:
    seen = {generate_password() for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        groups = password.split("-")
        assert [len(g) for g in groups] == [4] * 7
        assert set("".join(groups)) <= set(PASSWORD_ALPHABET)
    assert len(set(PASSWORD_ALPHABET)) == 32
    assert 28 * math.log2(len(PASSWORD_ALPHABET)) >= 128
    # Nothing that reads as something else on a screen.
    assert not set("ilou") & set(PASSWORD_ALPHABET)


async def test_replicas_with_their_own_data_directories_create_one_user_and_one_file(
        store_target: str, tmp_path: Path) -> None:
    dirs = [tmp_path / f"replica{i}" / "data" for i in range(REPLICAS)]
    created = await first_starts(store_target, dirs)
    assert created.count(True) == 1
    winner = dirs[created.index(True)]
    files = [d for d in dirs if (d / "initial-password").exists()]
    assert files == [winner]
    # No replica left a temporary file behind; every directory is private.
    for d in dirs:
        assert [p.name for p in d.iterdir() if p.name != ".first-start.lock"] == (
            ["initial-password"] if d == winner else [])
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((winner / "initial-password").stat().st_mode) == 0o600

    initial = read_initial_password(winner / "initial-password")
    assert initial is not None and initial.user == "admin"
    async with await open_store(store_target) as store:
        users = await store.list_users()
        assert [u.name for u in users] == ["admin"]
        hasher = settings_for(store_target, winner).argon2_hasher()
        assert await initial_password_works(store, hasher, initial) == users[0].password_hash


async def test_replicas_sharing_a_data_directory_create_one_user_and_one_file(
        store_target: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    created = await first_starts(store_target, [shared] * REPLICAS)
    assert created.count(True) == 1
    assert sorted(p.name for p in shared.iterdir()) == [".first-start.lock", "initial-password"]
    initial = read_initial_password(shared / "initial-password")
    assert initial is not None
    async with await open_store(store_target) as store:
        hasher = settings_for(store_target, shared).argon2_hasher()
        assert await initial_password_works(store, hasher, initial)


async def test_a_second_start_creates_nothing(store_target: str, tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert await first_starts(store_target, [d]) == [True]
    content = (d / "initial-password").read_bytes()
    assert await first_starts(store_target, [d]) == [False]
    assert await first_starts(store_target, [tmp_path / "other"]) == [False]
    assert (d / "initial-password").read_bytes() == content
    assert not (tmp_path / "other" / "initial-password").exists()


async def test_a_crash_after_the_insert_is_recovered_at_the_next_start(
        store: Store, store_target: str, tmp_path: Path) -> None:
    # The user was inserted, then the process died before renaming its file.
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    s = settings_for(store_target, d)
    initial = InitialPassword("admin", generate_password())
    await store.add_user("admin", s.argon2_hasher().hash(initial.password))
    pending = d / ".initial-password.crashed.tmp"
    pending.write_bytes(initial.render())
    os.chmod(pending, 0o600)
    # A crash before the insert leaves a file whose password is nobody's.
    orphan = d / ".initial-password.orphan.tmp"
    orphan.write_bytes(InitialPassword("admin", generate_password()).render())

    assert await ensure_first_user(store, s, s.argon2_hasher()) is False
    assert sorted(p.name for p in d.iterdir()) == [".first-start.lock", "initial-password"]
    assert read_initial_password(d / "initial-password") == initial


async def test_the_check_deletes_the_file_once_the_password_changed(
        store: Store, store_target: str, tmp_path: Path) -> None:
    d = tmp_path / "data"
    s = settings_for(store_target, d)
    hasher = s.argon2_hasher()
    assert await ensure_first_user(store, s, hasher) is True
    check = InitialPasswordCheck(d / "initial-password", hasher)
    assert await check.check(store) is True
    assert await check.check(store) is True  # unchanged: no re-verification needed
    await store.change_password("admin", hasher.hash("the admin's own"))
    assert await check.check(store) is False
    assert not (d / "initial-password").exists()
    assert await check.check(store) is False  # and stays quiet without a file


async def test_the_check_deletes_the_file_of_a_removed_user(
        store: Store, store_target: str, tmp_path: Path) -> None:
    d = tmp_path / "data"
    s = settings_for(store_target, d)
    assert await ensure_first_user(store, s, s.argon2_hasher()) is True
    await store.add_user("bob", "h")
    await store.remove_user("admin")
    assert await InitialPasswordCheck(d / "initial-password", s.argon2_hasher()).check(store) \
        is False
    assert not (d / "initial-password").exists()


async def test_a_loose_data_directory_and_file_are_made_private(
        store: Store, store_target: str, tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    s = settings_for(store_target, d)
    assert await ensure_first_user(store, s, s.argon2_hasher()) is True
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    os.chmod(d / "initial-password", 0o644)
    assert await InitialPasswordCheck(d / "initial-password", s.argon2_hasher()).check(store)
    assert stat.S_IMODE((d / "initial-password").stat().st_mode) == 0o600
