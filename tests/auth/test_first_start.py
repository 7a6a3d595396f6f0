"""The first start of a real server process: with no users and no
CHAT_BOOTSTRAP_PASSWORD it creates the first user with a generated password,
kept in a private file until that password changes."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from chatcore.protocol import AuthResult

from tests.fixtures.server import LiveServer
from tests.server.clients import V2Client, logged_in

PASSWORD_SHAPE = re.compile(r"[0-9abcdefghjkmnpqrstvwxyz]{4}(-[0-9abcdefghjkmnpqrstvwxyz]{4}){6}")


def data_dir(server: LiveServer) -> Path:
    return Path(server.env["CHAT_DB"]).parent


def password_file(server: LiveServer) -> Path:
    return data_dir(server) / "initial-password"


def initial_password(server: LiveServer) -> str:
    r = server.cli("initial-password")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def login_fails(server: LiveServer, user: str, password: str) -> bool:
    client = V2Client(server.port)
    try:
        result = client.login(user, password)
        return isinstance(result, AuthResult) and not result.ok
    finally:
        client.close()


def test_first_start_creates_admin_with_a_random_password_only_the_server_can_read(
        server_factory) -> None:
    server = server_factory(users={})
    path = password_file(server)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    password = initial_password(server)
    # 7 groups of 4 from a 32-symbol alphabet: 140 bits, typeable.
    assert PASSWORD_SHAPE.fullmatch(password), password
    assert password in path.read_text()

    # One log line names the command, never the password.
    log = server.log_text()
    lines = [line for line in log.splitlines() if "first start: created user 'admin'" in line]
    assert len(lines) == 1 and "chat-server initial-password" in lines[0], log
    assert "docker compose exec server chat-server initial-password" in lines[0]
    assert password not in log

    logged_in(server.port, "admin", password).close()
    users = server.cli("users", "list").stdout.splitlines()[1:]
    assert [row.split("\t")[0] for row in users] == ["admin"]


def test_two_first_starts_generate_different_passwords(server_factory) -> None:
    a = server_factory(users={})
    b = server_factory(users={})
    assert initial_password(a) != initial_password(b)


def test_users_passwd_deletes_the_file_and_the_old_password_stops_working(server_factory) -> None:
    server = server_factory(users={})
    old = initial_password(server)
    r = server.cli("users", "passwd", "admin", "--password-stdin", stdin="my own password\n")
    assert r.returncode == 0, r.stderr
    assert "initial password file" in r.stdout and old not in r.stdout
    assert not password_file(server).exists()

    r = server.cli("initial-password")
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "no initial password" in r.stderr
    assert login_fails(server, "admin", old)
    logged_in(server.port, "admin", "my own password").close()


def test_passwd_of_another_user_leaves_the_file(server_factory) -> None:
    server = server_factory(users={})
    password = initial_password(server)
    server.add_user("bob", "bob's password")
    r = server.cli("users", "passwd", "bob", "--password-stdin", stdin="bob's new one\n")
    assert r.returncode == 0, r.stderr
    assert initial_password(server) == password


def test_a_restart_creates_no_second_password_and_reminds(server_factory) -> None:
    server = server_factory(users={})
    password = initial_password(server)
    content = password_file(server).read_bytes()
    server.restart()
    assert password_file(server).read_bytes() == content
    assert initial_password(server) == password
    since = server.log_text(since_start=True)
    assert "first start: created user" not in since
    assert "the initial password of 'admin' has not been changed yet" in since
    assert password not in server.log_text()
    logged_in(server.port, "admin", password).close()
    assert [row.split("\t")[0] for row in server.cli("users", "list").stdout.splitlines()[1:]] \
        == ["admin"]


def test_configured_bootstrap_password_still_works_and_writes_no_file(server_factory) -> None:
    server = server_factory(users={}, CHAT_BOOTSTRAP_PASSWORD="chosen by the operator")
    assert not password_file(server).exists()
    logged_in(server.port, "admin", "chosen by the operator").close()
    r = server.cli("initial-password")
    assert r.returncode == 1 and "no initial password" in r.stderr
    assert "chosen by the operator" not in server.log_text()


def test_no_first_user_when_users_exist(server_factory) -> None:
    server = server_factory()  # alice is added before the first start
    assert not password_file(server).exists()
    assert [row.split("\t")[0] for row in server.cli("users", "list").stdout.splitlines()[1:]] \
        == ["alice"]
    assert "first start" not in server.log_text()


def test_the_first_user_name_is_configurable(server_factory) -> None:
    server = server_factory(users={}, CHAT_BOOTSTRAP_USER="root")
    password = initial_password(server)
    logged_in(server.port, "root", password).close()
    assert "user: root" in password_file(server).read_text()


def test_a_password_changed_behind_the_servers_back_deletes_the_file_at_start(
        server_factory) -> None:
    # Another way to change it than this CLI (another replica's, SQL): the
    # server notices that the file's password no longer verifies.
    server = server_factory(users={})
    old = initial_password(server)
    server.stop()
    saved = password_file(server).read_bytes()
    r = server.cli("users", "passwd", "admin", "--password-stdin", stdin="changed elsewhere\n")
    assert r.returncode == 0, r.stderr
    password_file(server).write_bytes(saved)  # as if that CLI had another data directory
    password_file(server).chmod(0o600)
    server.start()
    assert not password_file(server).exists()
    assert "no longer works" in server.log_text(since_start=True)
    assert old not in server.log_text()


def test_initial_password_command_never_prints_a_stale_password(server_factory) -> None:
    server = server_factory(users={})
    saved = password_file(server).read_bytes()
    r = server.cli("users", "passwd", "admin", "--password-stdin", stdin="changed\n")
    assert r.returncode == 0, r.stderr
    password_file(server).write_bytes(saved)
    r = server.cli("initial-password")
    assert r.returncode == 1 and r.stdout == ""
    assert "no longer works" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not password_file(server).exists()


def test_removing_the_first_user_deletes_the_file(server_factory) -> None:
    server = server_factory(users={})
    server.add_user("bob", "bob's password")
    assert server.cli("users", "remove", "admin").returncode == 0
    assert not password_file(server).exists()
