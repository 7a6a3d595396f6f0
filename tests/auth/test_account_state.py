"""Disabling, enabling and removing users while they are logged in, against a
real server: the CLI runs in another process (as an operator's would), the
server notices by itself, ends the live sessions and refuses the login like a
wrong password; on PostgreSQL the same holds across replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chatcore.protocol import AnswerDelta, AnswerEnd, Authenticate, AuthResult, Error, ErrorCode

from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.fixtures.v1client import GOODBYE, PASSWORD_ACCEPTED, USERNAME_ACCEPTED, OriginalV1Client
from tests.server.clients import V2Client, logged_in, wait_until

#: Short, so a test waits a fraction of a second for the server to notice.
FAST_CHECK = {"CHAT_ACCOUNT_CHECK_INTERVAL": "0.2"}
#: Long enough that nothing happens by itself while a test looks.
WAIT = 20.0


def cli_ok(server: LiveServer, *args: str) -> str:
    r = server.cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def login_result(server: LiveServer, user: str, password: str) -> AuthResult | Error:
    client = V2Client(server.port)
    try:
        return client.login(user, password)
    finally:
        client.close()


def revoked(client: V2Client) -> Error:
    """Read until the server's fatal ERROR (the end of the session)."""
    while True:
        event = client.next_event(timeout=WAIT)
        if isinstance(event, Error) and event.fatal:
            return event


def v1_until_goodbye(v1: OriginalV1Client) -> bytes:
    """The v1 chunks before the server's ``<GoodBye>`` (asserted: it must come)."""
    text = b""
    while True:
        chunk = v1.read_chunk()
        if len(chunk) < 64 or chunk.strip() == GOODBYE.encode():
            break
        text += chunk
    assert chunk.strip() == GOODBYE.encode(), chunk
    return text


def closed(client: V2Client) -> bool:
    client.sock.settimeout(WAIT)
    try:
        return client.sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_disable_ends_live_sessions_and_refuses_login_like_a_wrong_password(
        server_factory) -> None:
    server = server_factory(users={USER: PASSWORD, "bob": "bob's password"}, **FAST_CHECK)
    sessions = [logged_in(server.port, USER, PASSWORD) for _ in range(2)]
    bystander = logged_in(server.port, "bob", "bob's password")
    assert "disabled" in cli_ok(server, "users", "disable", USER)

    for client in sessions:
        error = revoked(client)
        assert error.code is ErrorCode.SESSION_REVOKED and error.fatal
        assert "disabled or removed" in error.message
        assert closed(client)
    server.wait_for_log("sessions of alice ended: the account was disabled or removed",
                        timeout=WAIT)
    # Everyone else carries on.
    assert bystander.chat("still here?").end is not None

    # The right password now gets exactly what a wrong one gets.
    disabled = login_result(server, USER, PASSWORD)
    wrong = login_result(server, "bob", "not bob's password")
    unknown = login_result(server, "nobody", PASSWORD)
    for result in (disabled, wrong, unknown):
        assert isinstance(result, AuthResult) and not result.ok
    assert disabled == wrong == unknown

    assert "enabled" in cli_ok(server, "users", "enable", USER)
    client = logged_in(server.port, USER, PASSWORD)
    assert client.chat("back again").text.startswith("Echo: back again")
    client.close()
    bystander.close()


def test_password_change_ends_the_sessions_logged_in_before_it(server_factory) -> None:
    # An operator resets a password after a compromise: whoever is logged in
    # with the old one (v2 or v1) is out within the check interval, and a login
    # with the new password stays.
    server = server_factory(users={USER: PASSWORD, "bob": "bob's password"}, **FAST_CHECK)
    old = logged_in(server.port, USER, PASSWORD)
    bystander = logged_in(server.port, "bob", "bob's password")
    with OriginalV1Client(server.port, timeout=WAIT) as v1:
        assert v1.login(USER, PASSWORD) == (USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        r = server.cli("users", "passwd", USER, "--password-stdin", stdin="the new password\n")
        assert r.returncode == 0, r.stderr
        fresh = logged_in(server.port, USER, "the new password")

        error = revoked(old)
        assert error.code is ErrorCode.SESSION_REVOKED and error.fatal
        assert "password of this account was changed" in error.message
        assert closed(old)
        text = v1_until_goodbye(v1)
        assert b"[ERROR] session_revoked:" in text and b"password" in text
    server.wait_for_log("sessions of alice ended: the password was changed", timeout=WAIT)
    # Five check intervals later, the new session and everyone else carry on.
    time.sleep(5 * float(FAST_CHECK["CHAT_ACCOUNT_CHECK_INTERVAL"]))
    assert fresh.chat("still in?").text.startswith("Echo: still in?")
    assert bystander.chat("me too?").end is not None
    result = login_result(server, USER, PASSWORD)
    assert isinstance(result, AuthResult) and not result.ok  # the old password is gone
    fresh.close()
    bystander.close()


def test_disable_stops_the_answer_in_flight_and_stores_what_was_said(server_factory) -> None:
    server = server_factory(**FAST_CHECK)
    client = logged_in(server.port, USER, PASSWORD)
    mid = client.start_chat("[standin:tokens=400] [standin:delay-ms=50] a long answer please",
                            conversation="long")
    first = client.next_event(timeout=WAIT)
    while not isinstance(first, AnswerDelta):
        first = client.next_event(timeout=WAIT)
    cli_ok(server, "users", "disable", USER)
    events = []
    while not (events and isinstance(events[-1], Error)):
        events.append(client.next_event(timeout=WAIT))
    # One ERROR ends both the message (its id) and the session; no END before it.
    end = events[-1]
    assert isinstance(end, Error) and end.code is ErrorCode.SESSION_REVOKED and end.fatal
    assert end.message_id == mid
    assert not [e for e in events if isinstance(e, AnswerEnd)]
    assert closed(client)
    turns = wait_until(lambda: server.history(USER))
    assert turns[-1]["status"] == "interrupted" and turns[-1]["conversation"] == "long"
    assert turns[-1]["answer"]  # the part that was streamed


def test_a_disabled_users_session_token_no_longer_logs_in(server_factory) -> None:
    server = server_factory(**FAST_CHECK)
    client = V2Client(server.port)
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok and result.token
    cli_ok(server, "users", "disable", USER)
    assert revoked(client).code is ErrorCode.SESSION_REVOKED
    client.close()
    cli_ok(server, "users", "enable", USER)
    again = V2Client(server.port)
    again.send(Authenticate(USER, token=result.token))
    answer = again.next_event(timeout=WAIT)
    assert isinstance(answer, AuthResult) and not answer.ok  # tokens died with the disable
    again.close()


def test_v1_session_of_a_disabled_user_ends_with_an_error_and_goodbye(server_factory) -> None:
    server = server_factory(**FAST_CHECK)
    with OriginalV1Client(server.port, timeout=WAIT) as v1:
        assert v1.login(USER, PASSWORD) == (USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        chunks, how = v1.answer("hello")
        assert how == "terminator" and "Echo: hello" in "".join(chunks)
        cli_ok(server, "users", "disable", USER)
        text = v1_until_goodbye(v1)
        assert b"[ERROR] session_revoked:" in text
        assert v1.read_chunk() == b""  # and the server closed
    with OriginalV1Client(server.port, timeout=WAIT) as v1:
        assert v1.login(USER, PASSWORD)[1] == b"invalid password : closing connection"


def test_removing_a_logged_in_user_ends_their_session(server_factory) -> None:
    server = server_factory(**FAST_CHECK)
    client = logged_in(server.port, USER, PASSWORD)
    cli_ok(server, "users", "remove", USER)
    assert revoked(client).code is ErrorCode.SESSION_REVOKED
    assert closed(client)


def test_the_initial_password_file_goes_while_the_server_runs(server_factory) -> None:
    # Changed by another path than this data directory's CLI (another
    # replica's, SQL): the running server notices and deletes the file.
    server = server_factory(users={}, **FAST_CHECK)
    path = Path(server.env["CHAT_DB"]).parent / "initial-password"
    saved = path.read_bytes()
    r = server.cli("users", "passwd", "admin", "--password-stdin", stdin="changed elsewhere\n")
    assert r.returncode == 0, r.stderr
    path.write_bytes(saved)  # as if that CLI had had another data directory
    server.wait_for_log("no longer works", timeout=WAIT)
    wait_until(lambda: not path.exists(), timeout=WAIT)


@pytest.mark.postgres
def test_disable_on_one_replica_ends_the_session_on_another(
        server_factory, postgres_db, tmp_path: Path) -> None:
    shared = {"CHAT_DB": str(postgres_db), **FAST_CHECK}
    # Each replica with its own data directory (TLS certificate, admin socket).
    a = server_factory(CHAT_DATA_DIR=str(tmp_path / "a"), **shared)  # adds alice
    b = server_factory(users={}, CHAT_DATA_DIR=str(tmp_path / "b"), **shared)
    client = logged_in(b.port, USER, PASSWORD)
    cli_ok(a, "users", "disable", USER)  # on replica a's side
    assert revoked(client).code is ErrorCode.SESSION_REVOKED
    b.wait_for_log("sessions of alice ended", timeout=WAIT)
    result = login_result(a, USER, PASSWORD)
    assert isinstance(result, AuthResult) and not result.ok
    cli_ok(b, "users", "enable", USER)
    logged_in(a.port, USER, PASSWORD).close()
