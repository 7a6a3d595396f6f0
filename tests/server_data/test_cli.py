"""The chat-server command, run as a real subprocess against a temporary database."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from argon2 import PasswordHasher
from chat_server.cli import main
from chat_server.store import Store, TurnRecord, open_store

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CHAT_SERVER = REPO / ".venv" / "bin" / "chat-server"
if not CHAT_SERVER.exists():  # running from another environment
    CHAT_SERVER = Path(sys.executable).with_name("chat-server")


@pytest.fixture
def env(store_target: str, engine: str) -> dict[str, str]:
    """The CLI's environment, on each engine (PostgreSQL: the password in
    CHAT_DB_PASSWORD, as an operator would set it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OLLAMA_"))}
    if engine == "postgresql":
        parts = urlsplit(store_target)
        host = parts.netloc.rpartition("@")[2]
        base["CHAT_DB"] = urlunsplit(parts._replace(netloc=f"{parts.username}@{host}"))
        base["CHAT_DB_PASSWORD"] = parts.password or ""
    else:
        base["CHAT_DB"] = store_target
    base.update({
        # Cheap hashing keeps the tests quick; the parameters are still argon2id.
        "CHAT_ARGON2_TIME_COST": "1",
        "CHAT_ARGON2_MEMORY_KIB": "1024",
        "CHAT_ARGON2_PARALLELISM": "1",
    })
    return base


def cli(env: dict[str, str], *args: str, stdin: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHAT_SERVER), *args], input=stdin if stdin is not None else "",
        env=env, capture_output=True, text=True, timeout=60,
    )


def db(env: dict[str, str], action: Callable[[Store], Awaitable[T]]) -> T:
    """``await action(store)`` on the CLI's database, from this test process."""

    async def run() -> T:
        store = await open_store(env["CHAT_DB"], password=env.get("CHAT_DB_PASSWORD"))
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def password_hash(env: dict[str, str], name: str) -> str | None:
    async def get(store: Store) -> str | None:
        user = await store.get_user(name)
        return None if user is None else user.password_hash

    return db(env, get)


def user_names(env: dict[str, str]) -> list[str]:
    async def names(store: Store) -> list[str]:
        return [u.name for u in await store.list_users()]

    return db(env, names)


def list_rows(stdout: str) -> list[list[str]]:
    """The rows of ``users list`` under its header line."""
    lines = stdout.splitlines()
    assert lines[0].split("\t") == ["NAME", "CREATED", "LAST LOGIN", "MESSAGES", "STATUS"]
    return [line.split("\t") for line in lines[1:]]


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chat-server: ")
    assert text in lines[0]


def test_users_add_list_passwd_remove(env: dict[str, str]) -> None:
    r = cli(env, "users", "add", "alice", "--password-stdin", stdin="first pass\n")
    assert r.returncode == 0, r.stderr
    assert "alice" in r.stdout and "first pass" not in r.stdout + r.stderr

    h = password_hash(env, "alice")
    assert h is not None and h.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert PasswordHasher().verify(h, "first pass")  # trailing spaces kept, newline dropped

    r = cli(env, "users", "add", "bob", "--password-stdin", stdin="pw-b\r\n")
    assert r.returncode == 0, r.stderr
    r = cli(env, "users", "list")
    assert r.returncode == 0
    rows = list_rows(r.stdout)
    assert [row[0] for row in rows] == ["alice", "bob"]
    for _, created, last_login, messages, status in rows:
        assert created.endswith("Z")
        datetime.fromisoformat(created.replace("Z", "+00:00"))
        assert (last_login, messages, status) == ("never", "0", "enabled")

    r = cli(env, "users", "passwd", "alice", "--password-stdin", stdin="second pass\n")
    assert r.returncode == 0, r.stderr
    h2 = password_hash(env, "alice")
    assert h2 is not None
    assert PasswordHasher().verify(h2, "second pass")

    r = cli(env, "users", "remove", "alice")
    assert r.returncode == 0
    r = cli(env, "users", "list")
    assert [row[0] for row in list_rows(r.stdout)] == ["bob"]
    hb = password_hash(env, "bob")
    assert hb is not None and PasswordHasher().verify(hb, "pw-b")  # CRLF stripped


def test_user_errors_are_one_line_with_nonzero_status(env: dict[str, str]) -> None:
    assert cli(env, "users", "add", "alice", "--password-stdin", stdin="pw\n").returncode == 0
    assert_one_line_error(
        cli(env, "users", "add", "alice", "--password-stdin", stdin="other\n"), 1, "already exists"
    )
    assert_one_line_error(
        cli(env, "users", "add", "bad name", "--password-stdin", stdin="pw\n"), 1,
        "invalid user name",
    )
    assert_one_line_error(
        cli(env, "users", "add", "x" * 65, "--password-stdin", stdin="pw\n"), 1, "at most 64"
    )
    assert_one_line_error(
        cli(env, "users", "add", "carol", "--password-stdin", stdin="\n"), 1,
        "password must not be empty",
    )
    assert_one_line_error(
        cli(env, "users", "add", "carol", "--password-stdin", stdin=""), 1,
        "password must not be empty",
    )
    assert_one_line_error(
        cli(env, "users", "add", "carol", "--password-stdin", stdin="p" * 1025 + "\n"), 1,
        "at most 1024",
    )
    assert_one_line_error(cli(env, "users", "remove", "ghost"), 1, "unknown user 'ghost'")
    assert_one_line_error(
        cli(env, "users", "passwd", "ghost", "--password-stdin", stdin="pw\n"), 1, "unknown user"
    )
    # No terminal and no --password-stdin: refuse rather than hang or read a pipe.
    assert_one_line_error(cli(env, "users", "add", "carol", stdin="pw\npw\n"), 1,
                          "use --password-stdin")
    assert user_names(env) == ["alice"]


def test_password_is_never_printed(env: dict[str, str]) -> None:
    secret = "Sup3r-Secret-Phrase"
    results = [
        cli(env, "users", "add", "alice", "--password-stdin", stdin=secret + "\n"),
        cli(env, "users", "add", "alice", "--password-stdin", stdin=secret + "\n"),
        cli(env, "users", "passwd", "alice", "--password-stdin", stdin=secret + "2\n"),
        cli(env, "users", "list"),
    ]
    for r in results:
        assert secret not in r.stdout and secret not in r.stderr


def test_history_export_json_lines(env: dict[str, str]) -> None:
    t0 = datetime(2025, 5, 6, 7, 8, 9, 250000, tzinfo=UTC)

    async def fill(store: Store) -> None:
        await store.add_user("alice", "h")
        await store.add_user("bob", "h")
        await store.save_turn(TurnRecord(
            "alice", "conv-1", t0, t0.replace(second=12), "llama3.2", "hello?",
            "Hi! 👋\nHow can I help?", 12, 7, "complete", backend="gpu1"))  # type: ignore[arg-type]
        await store.save_turn(TurnRecord(
            "alice", "conv-2", t0.replace(minute=9), None, "llama3.2", "second", "partial",
            None, None, "interrupted"))  # type: ignore[arg-type]
        await store.save_turn(TurnRecord("bob", "conv-1", t0, t0, "llama3.2", "bob's", "x", 1, 1))

    db(env, fill)

    r = cli(env, "history", "export", "alice")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records == [
        {
            "conversation": "conv-1",
            "created_at": "2025-05-06T07:08:09.250Z",
            "completed_at": "2025-05-06T07:08:12.250Z",
            "model": "llama3.2",
            "backend": "gpu1",
            "user": "hello?",
            "answer": "Hi! 👋\nHow can I help?",
            "prompt_tokens": 12,
            "answer_tokens": 7,
            "status": "complete",
        },
        {
            "conversation": "conv-2",
            "created_at": "2025-05-06T07:09:09.250Z",
            "completed_at": None,
            "model": "llama3.2",
            "backend": None,
            "user": "second",
            "answer": "partial",
            "prompt_tokens": None,
            "answer_tokens": None,
            "status": "interrupted",
        },
    ]

    r = cli(env, "history", "export", "alice", "--conversation", "conv-2")
    assert [json.loads(line)["user"] for line in r.stdout.splitlines()] == ["second"]
    r = cli(env, "history", "export", "alice", "--conversation", "none")
    assert r.returncode == 0 and r.stdout == ""
    assert_one_line_error(cli(env, "history", "export", "ghost"), 1, "unknown user 'ghost'")


def test_users_list_shows_last_login_messages_and_status(env: dict[str, str]) -> None:
    for name in ("alice", "bob"):
        assert cli(env, "users", "add", name, "--password-stdin", stdin="pw\n").returncode == 0

    async def activity(store: Store) -> None:
        for i in range(3):
            await store.save_turn(TurnRecord("alice", "c", datetime.now(UTC), None, "m", f"q{i}", "a"))
        await store.record_login("alice")

    db(env, activity)
    r = cli(env, "users", "disable", "bob")
    assert r.returncode == 0 and "disabled" in r.stdout
    rows = {row[0]: row for row in list_rows(cli(env, "users", "list").stdout)}
    assert rows["alice"][2].endswith("Z") and rows["alice"][3:] == ["3", "enabled"]
    assert rows["bob"][2:] == ["never", "0", "disabled"]


def test_disable_and_enable(env: dict[str, str]) -> None:
    assert cli(env, "users", "add", "alice", "--password-stdin", stdin="pw\n").returncode == 0

    async def token(store: Store) -> str:
        return (await store.create_session_token("alice", timedelta(days=1))).token

    async def state(store: Store) -> tuple[bool, str | None]:
        user = await store.get_user("alice")
        assert user is not None
        return user.disabled, await store.verify_session_token(issued)

    issued = db(env, token)
    assert cli(env, "users", "disable", "alice").returncode == 0
    assert db(env, state) == (True, None)  # disabled, and the session token is dead
    r = cli(env, "users", "enable", "alice")
    assert r.returncode == 0 and "enabled" in r.stdout
    assert db(env, state) == (False, None)
    assert_one_line_error(cli(env, "users", "disable", "ghost"), 1, "unknown user 'ghost'")
    assert_one_line_error(cli(env, "users", "enable", "ghost"), 1, "unknown user 'ghost'")


def test_passwd_revokes_session_tokens(env: dict[str, str]) -> None:
    assert cli(env, "users", "add", "alice", "--password-stdin", stdin="pw\n").returncode == 0

    async def token(store: Store) -> str:
        return (await store.create_session_token("alice", timedelta(days=1))).token

    issued = db(env, token)
    r = cli(env, "users", "passwd", "alice", "--password-stdin", stdin="new pw\n")
    assert r.returncode == 0 and "revoked" in r.stdout

    async def check(store: Store) -> str | None:
        return await store.verify_session_token(issued)

    assert db(env, check) is None


def test_commands_work_while_the_server_holds_the_database(env: dict[str, str]) -> None:
    # The running server keeps its connections open; the CLI uses its own.
    async def scenario(server_side: Store) -> None:
        r = await asyncio.to_thread(
            cli, env, "users", "add", "alice", "--password-stdin", stdin="pw\n")
        assert r.returncode == 0, r.stderr
        assert await server_side.get_user("alice") is not None
        await server_side.save_turn(
            TurnRecord("alice", "c", datetime.now(UTC), None, "m", "q", "a"))
        r = await asyncio.to_thread(cli, env, "history", "export", "alice")
        assert len(r.stdout.splitlines()) == 1
        assert (await asyncio.to_thread(cli, env, "users", "remove", "alice")).returncode == 0
        assert await server_side.get_user("alice") is None
        assert await server_side.turns("alice") == []

    db(env, scenario)


@pytest.mark.parametrize(
    "args", [(), ("serve",), ("users", "list"), ("history", "export", "x"), ("healthcheck",)]
)
def test_bad_configuration_exits_2_with_one_line(env: dict[str, str], args: tuple[str, ...]) -> None:
    env["CHAT_PORT"] = "abc"
    r = cli(env, *args)
    assert_one_line_error(r, 2, "CHAT_PORT: expected an integer 0-65535, got 'abc'")
    assert r.stdout == ""


def test_unusable_database_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    env["CHAT_DB"] = str(blocker / "chat.db")
    env.pop("CHAT_DB_PASSWORD", None)
    assert_one_line_error(cli(env, "users", "list"), 1, "cannot create database directory")


def test_usage_errors_and_module_entry_point(env: dict[str, str]) -> None:
    r = cli(env, "users")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = cli(env, "nonsense")
    assert r.returncode == 2
    r = subprocess.run([sys.executable, "-m", "chat_server", "--help"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for command in ("serve", "users", "history", "healthcheck"):
        assert command in r.stdout


class _CountingSink(io.TextIOBase):
    """stdout that keeps nothing: how many lines, and the first of each turn's id."""

    def __init__(self) -> None:
        self.lines = 0
        self.users: list[str] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines += 1
            self.users.append(json.loads(line)["user"][:12])
        return len(text)


def test_history_export_streams_a_huge_history_in_bounded_memory(env: dict[str, str]) -> None:
    """A user's history can be far larger than the memory of the host the
    administrator exports it on: the export reads and writes it in pages, so
    what it holds is one page whatever the history's size."""
    turns, chars = 320, 32 * 1024  # 20 MiB of text

    async def fill(store: Store) -> None:
        await store.add_user("alice", "h")
        now = datetime.now(UTC)
        for n in range(turns):
            await store.save_turn(TurnRecord(
                "alice", f"c{n % 3}", now, now, "llama3.2", f"q{n:05d} " + "u" * chars,
                "a" * chars, 1, 1))  # type: ignore[arg-type]

    db(env, fill)
    sink = _CountingSink()
    tracemalloc.start()
    try:
        code = main(["history", "export", "alice"], environ=env, stdout=sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    assert sink.lines == turns
    assert sink.users == [f"q{n:05d} uuuuu"[:12] for n in range(turns)]  # in order, each once
    # One page of turns (64 x 64 KiB) and the JSON of one, not 20 MiB.
    assert peak < 10 * 2**20, peak
