"""Session tokens against a live server (docs/PROTOCOL.md §15): issued at every v2
login, accepted instead of the password, ending with expiry, ``users passwd``,
``users disable``, and the client's BYE (logging out); stored hashed; throttled and refused like a wrong password;
never logged."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from chatcore.protocol import Authenticate, AuthResult, Bye, Error, ErrorCode

from tests.fixtures.postgres import database_env
from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.server.clients import V2Client

OTHER, OTHER_PASSWORD = "bob", "bob's own passphrase"


def password_login(server: LiveServer, user: str = USER, password: str = PASSWORD) -> AuthResult:
    client = V2Client(server.port)
    try:
        result = client.login(user, password)
    finally:
        client.close()
    assert isinstance(result, AuthResult) and result.ok, result
    assert result.token is not None
    return result


def token_login(server: LiveServer, token: str, user: str = USER) -> AuthResult | Error:
    client = V2Client(server.port)
    try:
        client.send(Authenticate(user, token=token))
        event = client.next_event()
    finally:
        client.close()
    assert isinstance(event, (AuthResult, Error)), event
    return event


def refused(result: AuthResult | Error) -> bool:
    return isinstance(result, AuthResult) and not result.ok


@pytest.fixture
def server(server_factory) -> LiveServer:
    return server_factory(users={USER: PASSWORD, OTHER: OTHER_PASSWORD})


def test_a_token_logs_in_instead_of_the_password_and_brings_a_fresh_one(server):
    first = password_login(server)
    assert first.token is not None and len(first.token) >= 43  # 256 random bits, base64url
    client = V2Client(server.port)
    client.send(Authenticate(USER, token=first.token))
    result = client.next_event()
    assert isinstance(result, AuthResult) and result.ok and result.user == USER, result
    assert result.token is not None and result.token != first.token
    # A logged-in session like any other: it chats.
    assert client.chat("after a token login").end is not None
    client.close()
    # The fresh one logs in (once) in its turn.
    assert token_login(server, result.token).ok  # type: ignore[union-attr]


def test_a_token_logs_in_once_and_a_replayed_copy_fails_like_a_wrong_password(server):
    # A copy of a token taken after it was used (a log, a dump, a proxy) must
    # not log in: the login that used it ended it and got the next one.
    first = password_login(server).token
    assert first is not None
    client = V2Client(server.port)
    client.send(Authenticate(USER, token=first))
    result = client.next_event()
    assert isinstance(result, AuthResult) and result.ok, result
    # ... also while the session that used it is still live, on another connection.
    replay = token_login(server, first)
    assert refused(replay)
    assert replay == token_login(server, "C" * 43)  # the same generic failure
    assert client.chat("the first session carries on").end is not None
    client.close()
    # Nobody can tell the thief from the owner: the replay ended the token the
    # first login was given, so neither side can resume with it (the owner
    # logs in with the password again).
    assert result.token is not None and refused(token_login(server, result.token))


def test_a_replayed_token_ends_the_chain_it_started_and_no_other(server):
    # password -> t1 -> t2 -> t3 by token logins; a second chain and another
    # user's token alongside.
    t1 = password_login(server).token
    other_chain = password_login(server).token
    bobs = password_login(server, OTHER, OTHER_PASSWORD).token
    t2 = token_login(server, t1).token  # type: ignore[arg-type,union-attr]
    t3 = token_login(server, t2).token  # type: ignore[union-attr]
    assert t3 is not None
    # A copy of t1, stolen before it was used, is presented now.
    assert refused(token_login(server, t1))  # type: ignore[arg-type]
    assert refused(token_login(server, t3))  # the chain's newest ended with it
    assert token_login(server, other_chain).ok  # type: ignore[arg-type,union-attr]
    assert token_login(server, bobs, OTHER).ok  # type: ignore[arg-type,union-attr]


def test_of_connections_racing_with_one_token_only_one_logs_in(server):
    token = password_login(server).token
    assert token is not None
    clients = [V2Client(server.port) for _ in range(4)]
    try:
        for client in clients:  # all four AUTHs are on their way before any verdict
            client.send(Authenticate(USER, token=token))
        verdicts = [client.next_event() for client in clients]
    finally:
        for client in clients:
            client.close()
    assert all(isinstance(v, AuthResult) for v in verdicts), verdicts
    assert sum(v.ok for v in verdicts) == 1, verdicts  # type: ignore[union-attr]


def test_tokens_are_random_and_distinct(server):
    tokens = {password_login(server).token for _ in range(5)}
    assert len(tokens) == 5


def test_a_bad_token_fails_exactly_like_a_wrong_password(server):
    wrong_password = V2Client(server.port)
    by_password = wrong_password.login(USER, "not the password")
    wrong_password.close()
    forged = token_login(server, "A" * 43)
    assert refused(by_password) and refused(forged)
    assert forged == by_password  # same fields, same generic message


def test_a_token_logs_in_only_its_own_user(server):
    alices = password_login(server).token
    assert alices is not None
    assert refused(token_login(server, alices, user=OTHER))
    assert refused(token_login(server, alices, user="no-such-user"))


def test_an_expired_token_is_refused(server_factory):
    server = server_factory(CHAT_SESSION_TOKEN_TTL="1")
    token = password_login(server).token
    assert token is not None
    time.sleep(1.5)  # not a timing assertion: waiting out the token's lifetime
    assert refused(token_login(server, token))
    # The password still works, and brings a new token.
    assert password_login(server).token != token


def test_bye_logs_out_the_tokens_the_session_used_and_was_given(server):
    first = password_login(server)  # closed without BYE: its token stays live
    assert first.token is not None
    other = password_login(server).token  # another session of the same user
    client = V2Client(server.port)
    client.send(Authenticate(USER, token=first.token))
    result = client.next_event()
    assert isinstance(result, AuthResult) and result.ok and result.token is not None, result
    assert client.bye() == Bye("goodbye")
    client.close()
    assert refused(token_login(server, first.token))
    assert refused(token_login(server, result.token))
    # Only that session's: the other one's token still logs in.
    assert other is not None and token_login(server, other).ok  # type: ignore[union-attr]


def test_users_passwd_ends_every_token_of_the_user(server):
    tokens = [password_login(server).token for _ in range(3)]
    bobs = password_login(server, OTHER, OTHER_PASSWORD).token
    r = server.cli("users", "passwd", USER, "--password-stdin", stdin="a brand new password\n")
    assert r.returncode == 0, r.stderr
    assert all(refused(token_login(server, t)) for t in tokens if t)
    assert bobs is not None and token_login(server, bobs, user=OTHER).ok  # type: ignore[union-attr]


def test_users_disable_ends_every_token_and_enable_does_not_revive_them(server):
    token = password_login(server).token
    assert token is not None
    assert server.cli("users", "disable", USER).returncode == 0
    assert refused(token_login(server, token))
    assert server.cli("users", "enable", USER).returncode == 0
    assert refused(token_login(server, token))
    assert password_login(server).ok


def test_users_remove_ends_the_tokens(server):
    token = password_login(server, OTHER, OTHER_PASSWORD).token
    assert token is not None
    r = server.cli("users", "remove", OTHER)
    assert r.returncode == 0, r.stderr
    assert refused(token_login(server, token, user=OTHER))


def test_failed_token_logins_count_towards_throttling(server):
    for _ in range(3):
        assert refused(token_login(server, "B" * 43))
    # Three failures in a row: the next attempt, even with the password, waits.
    client = V2Client(server.port)
    result = client.login(USER, PASSWORD)
    client.close()
    assert isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED, result


def test_no_tokens_when_the_lifetime_is_zero(server_factory):
    server = server_factory(CHAT_SESSION_TOKEN_TTL="0")
    client = V2Client(server.port)
    result = client.login(USER, PASSWORD)
    client.close()
    assert isinstance(result, AuthResult) and result.ok and result.token is None


def test_tokens_never_reach_the_log(server_factory):
    server = server_factory(CHAT_LOG_LEVEL="debug")
    good = password_login(server).token
    assert good is not None
    fresh = token_login(server, good)
    assert isinstance(fresh, AuthResult) and fresh.ok and fresh.token
    forged = "C" * 43
    assert refused(token_login(server, forged))
    server.stop()
    log = server.log_text()
    assert "method" in log and "login ok" in log  # the logins were logged ...
    for secret in (good, fresh.token, forged):
        assert secret not in log  # ... but not the tokens


def _sqlite_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_database_keeps_only_a_hash_of_each_token(server_factory, engine, request):
    env = database_env(engine, request)
    server = server_factory(**env)
    tokens = [password_login(server).token for _ in range(3)]
    assert all(tokens)
    digests = {hashlib.sha256(t.encode()).hexdigest() for t in tokens if t}
    if engine == "sqlite":
        db = Path(server.env["CHAT_DB"])
        raw = _sqlite_bytes(db)  # the file and its WAL, as a thief would copy them
        assert not any(t.encode() in raw for t in tokens if t)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT * FROM session_tokens").fetchall()
    else:
        import psycopg

        with psycopg.connect(env["CHAT_DB"], password=env["CHAT_DB_PASSWORD"]) as conn:
            rows = conn.execute("SELECT * FROM session_tokens").fetchall()
    values = {str(v) for row in rows for v in row}
    assert digests <= values
    assert not any(t in v for t in tokens if t for v in values)
