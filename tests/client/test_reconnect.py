"""The interactive client on a changing server: it reconnects by itself (backoff,
a notice per attempt, a limit), logs in again with its session token (never a
kept password), continues the conversation, marks an answer that was cut and
asks it again with /retry (docs/PROTOCOL.md §15, README "Reconnecting").

Real ``chat-client`` on a pty (pexpect), real server processes restarted or
killed, a real TCP relay for network failures the server survives."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest
from chat_client.reconnect import Backoff

from tests.client.conftest import CHAT_CLIENT, REPO, client_env
from tests.client.terminal import PROMPT, Client, user_args
from tests.fixtures.postgres import database_env
from tests.fixtures.relay import Relay
from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.server.clients import wait_until

LONG = "[standin:delay-ms=60] [standin:tokens=60]"


def _piped_client(port: int) -> subprocess.Popen[str]:
    """A chat-client without a terminal: lines on stdin, answers on stdout."""
    return subprocess.Popen(
        [CHAT_CLIENT, *user_args(port)], cwd=REPO, text=True,
        env=client_env(CHAT_PASSWORD=PASSWORD), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _logged_in(spawn, port: int, **env: str) -> Client:
    c = spawn(user_args(port), **env)
    c.login(PASSWORD)
    c.expect(PROMPT)
    return c


def _exit_status(c: Client, timeout: float = 60) -> int | None:
    c.child.expect(pexpect.EOF, timeout=timeout)
    c.child.close()
    return c.child.exitstatus


def _messages(request: dict) -> list[dict[str, str]]:
    return request["body"]["messages"]


def _logins(server: LiveServer) -> int:
    return server.log_text().count("event=auth_ok") or server.log_text().count("authenticated")


def test_the_client_survives_a_server_restart_and_the_conversation_goes_on(live_server, spawn):
    standin = live_server.standin
    c = _logged_in(spawn, live_server.port)
    c.run("remember the word pineapple", "Echo: remember the word pineapple")

    c.child.send("which word")  # typing, not sent yet, when the server goes
    time.sleep(0.3)  # not a timing assertion: the keys reach the prompt first
    live_server.stop()  # SIGTERM: the server says it is shutting down and goes away
    c.expect("reconnecting (attempt 1/")
    live_server.start()
    c.expect("reconnected to", timeout=90)
    c.expect(PROMPT)

    # What was being typed is still there; the line is finished and sent.
    c.run(" was it?", "Echo: which word was it?")
    # The restarted server loaded the conversation from its database: the model
    # saw the turn from before the restart.
    requests = standin.wait_for_requests(2)
    context = _messages(requests[-1])
    assert context[-1]["content"] == "which word was it?"
    assert any("pineapple" in m["content"] for m in context[:-1]), context
    # /history shows both turns, and the password was asked once: the reconnect
    # logged in with the session token.
    c.type("/history")
    c.expect("remember the word pineapple")
    c.expect("which word was it?")
    assert c.transcript.getvalue().count("Password") == 1
    assert "Traceback" not in c.transcript.getvalue()


def test_an_answer_cut_by_a_killed_server_is_marked_and_retry_gets_it_whole(live_server, spawn):
    standin = live_server.standin
    c = _logged_in(spawn, live_server.port)
    c.type(f"tell a long story {LONG}")
    c.expect("Echo: tell a long story")
    live_server.stop(signal.SIGKILL)  # mid-answer, no goodbye
    c.expect("the answer was cut off")
    c.expect("/retry asks again")
    c.expect("reconnecting (attempt 1/")
    live_server.start()
    c.expect("reconnected to", timeout=90)
    c.expect(PROMPT)

    c.type("/retry")
    c.expect("60 tokens", timeout=60)  # the whole answer this time, with its END
    c.expect(PROMPT)
    requests = standin.wait_for_requests(2)
    retried = _messages(requests[-1])
    assert retried[-1]["content"] == f"tell a long story {LONG}"  # the same message again
    assert not any(m["role"] == "assistant" for m in retried), retried  # nothing cut in context
    c.type("/history")
    c.expect("[cut off: the connection was lost]")
    # Stored once, complete: the killed server never acknowledged the first try.
    turns = live_server.history(USER)
    assert [t["status"] for t in turns] == ["complete"], turns


def test_a_dropped_network_marks_the_answer_and_the_server_stores_it_interrupted(live_server, spawn):
    standin = live_server.standin
    relay = Relay(live_server.port)
    try:
        c = _logged_in(spawn, relay.port)
        c.run("the first question", "Echo: the first question")
        c.type(f"the second question {LONG}")
        c.expect("Echo: the second question")
        assert relay.cut() >= 2  # the server lives on; the client's link is reset
        c.expect("the answer was cut off")
        c.expect("reconnected to", timeout=60)
        c.expect(PROMPT)
        c.type("/retry")
        c.expect("60 tokens", timeout=60)
        c.expect(PROMPT)
    finally:
        relay.close()
    turns = wait_until(lambda: (t := live_server.history(USER)) and len(t) == 3 and t)
    assert [t["status"] for t in turns] == ["complete", "interrupted", "complete"], turns
    assert turns[1]["answer"].startswith("Echo: the second question")
    # The retry's context: the complete first turn, not the interrupted one.
    retried = _messages(standin.wait_for_requests(3)[-1])
    assert [m["content"] for m in retried if m["role"] == "user"] == [
        "the first question", f"the second question {LONG}"]
    assert turns[1]["answer"] not in [m["content"] for m in retried]


def test_a_message_the_shutting_down_server_did_not_take_is_sent_again_once(live_server, spawn):
    # The race of a draining replica: the client sends a message in the instant
    # the server tells its idle sessions to reconnect. The relay holds both
    # directions, so the message reaches the server only after it has closed
    # the session, and the client hears "shutting_down" only after sending.
    standin = live_server.standin
    relay = Relay(live_server.port)
    try:
        c = _logged_in(spawn, relay.port)
        c.run("the first question", "Echo: the first question")
        relay.hold()
        c.type("the question in the race")
        time.sleep(0.5)  # not a timing assertion: the message reaches the relay first
        assert live_server.stop(signal.SIGTERM) == 0  # closes the idle session and exits
        relay.release()
        c.expect("did not take your message; it is sent again once reconnected")
        c.expect("reconnecting (attempt 1/")
        live_server.start()
        c.expect("reconnected to", timeout=90)
        # No /retry: the answer comes by itself, once.
        c.expect("Echo: the question in the race", timeout=60)
        c.expect(PROMPT)
    finally:
        relay.close()
    assert "/retry asks again" not in c.transcript.getvalue()
    turns = live_server.history(USER)
    assert [(t["user"], t["status"]) for t in turns] == [
        ("the first question", "complete"), ("the question in the race", "complete")], turns
    asked = [m["content"] for r in standin.wait_for_requests(2) for m in _messages(r)[-1:]]
    assert asked.count("the question in the race") == 1, asked


@pytest.mark.postgres
def test_the_conversation_moves_to_another_replica_with_the_token(server_factory, spawn, request):
    # Two replicas on one PostgreSQL database behind a relay that, like a
    # balancer, sends each new connection to the first replica that takes it.
    env = database_env("postgresql", request)
    first = server_factory(**env)
    second = server_factory(users={}, **env)
    standin = first.standin
    relay = Relay(first.port, second.port)
    try:
        c = _logged_in(spawn, relay.port)
        c.run("remember the word pineapple", "Echo: remember the word pineapple")
        first.stop(signal.SIGKILL)
        c.expect("reconnected to", timeout=60)
        c.expect(PROMPT)
        c.run("which word was it?", "Echo: which word was it?")
    finally:
        relay.close()
    # The other replica accepted the token issued by the dead one, and loaded
    # the conversation from the shared database.
    assert "method=token" in second.log_text() or '"method": "token"' in second.log_text()
    context = _messages(standin.wait_for_requests(2)[-1])
    assert any("pineapple" in m["content"] for m in context[:-1]), context
    assert c.transcript.getvalue().count("Password") == 1


def test_reconnecting_gives_up_after_the_limit_with_a_clear_message(live_server, spawn):
    c = _logged_in(spawn, live_server.port, CHAT_RECONNECT_ATTEMPTS="3")
    live_server.stop()
    c.expect("reconnecting (attempt 1/3)")
    c.expect("reconnecting (attempt 3/3)")
    c.expect("gave up after 3 reconnect attempts")
    assert _exit_status(c) == 6


def test_zero_attempts_ends_the_session_on_a_lost_connection(live_server, spawn):
    c = _logged_in(spawn, live_server.port, CHAT_RECONNECT_ATTEMPTS="0")
    live_server.stop()
    c.expect("closed the connection")
    assert _exit_status(c) == 6
    assert "reconnecting" not in c.transcript.getvalue()


def test_a_refused_token_asks_for_the_password_again(live_server, spawn):
    c = _logged_in(spawn, live_server.port)
    c.run("before", "Echo: before")
    r = live_server.cli("users", "passwd", USER, "--password-stdin", stdin="a new secret\n")
    assert r.returncode == 0, r.stderr
    live_server.restart()  # the client's connection drops; its token died with the password
    c.expect("no longer accepts this session's token", timeout=90)
    c.expect("Password for alice")
    c.child.sendline("a new secret")
    c.expect("reconnected to")
    c.expect(PROMPT)
    c.run("after", "Echo: after")


def test_without_a_terminal_a_refused_token_exits_3(live_server):
    proc = _piped_client(live_server.port)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("Echo: hello")
        live_server.cli("users", "disable", USER)
        live_server.restart()
        # Without a terminal the client reads its next line before it notices.
        proc.stdin.write("again\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "no longer accepts this session's token" in err
    assert "reconnecting (attempt 1/" in err


def test_a_message_that_never_left_goes_out_once_on_the_new_connection(live_server):
    # Without a terminal nothing wakes the client while it waits for its next
    # line: it learns that the server left only when it tries to send. That
    # message provably never reached the server, so it goes out (once) on the
    # new connection.
    proc = _piped_client(live_server.port)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("Echo: hello")
        live_server.restart()
        proc.stdin.write("again\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("Echo: again")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reconnected to" in err
    assert [t["user"] for t in live_server.history(USER)] == ["hello", "again"]


def test_an_idle_close_reconnects_only_when_the_user_sends_again(server_factory, spawn):
    server = server_factory(CHAT_IDLE_TIMEOUT="2")
    c = _logged_in(spawn, server.port)
    c.expect("your next message reconnects", timeout=30)
    time.sleep(1)  # not a timing assertion: room for a wrong reconnect to show
    assert "reconnecting" not in c.transcript.getvalue()
    logins = _logins(server)
    c.type("after a nap")
    c.expect("reconnected to")
    c.expect("Echo: after a nap")
    assert _logins(server) == logins + 1


def test_reconnecting_over_tls_keeps_the_trust_and_refuses_a_changed_certificate(
        live_server, spawn, tmp_path):
    known = tmp_path / "known_hosts"
    c = _logged_in(spawn, live_server.port, CHAT_TLS="1", CHAT_TLS_ACCEPT_NEW="1",
                   CHAT_KNOWN_HOSTS=str(known))
    assert known.exists()
    c.run("over tls", "Echo: over tls")
    live_server.restart()  # same certificate
    c.expect("reconnected to", timeout=90)
    c.expect(PROMPT)
    c.run("still over tls", "Echo: still over tls")
    # A new certificate behind the same address: refused, not retried.
    live_server.stop()
    shutil.rmtree(Path(live_server.env["CHAT_DB"]).parent / "tls")
    live_server.start()
    c.expect("CHANGED since it was remembered", timeout=90)
    assert _exit_status(c) == 7


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    b = Backoff(attempts=10, base=0.5, cap=30.0)
    lowest = [b.delay(k, rand=lambda: 0.0) for k in range(1, 11)]
    highest = [b.delay(k, rand=lambda: 0.999999) for k in range(1, 11)]
    assert lowest[:4] == [0.25, 0.5, 1.0, 2.0]
    assert all(hi <= 30.0 for hi in highest) and highest[-1] > 29.9
    assert all(lo < hi for lo, hi in zip(lowest, highest, strict=True))  # jitter spreads clients
    assert lowest == sorted(lowest)
    with pytest.raises(ValueError):
        Backoff(attempts=-1)
