"""The interactive UI, driven through a pseudo-terminal with pexpect.

The real ``.venv/bin/chat-client`` runs on a pty (TERM=xterm, 40x120), so
prompt_toolkit, the hidden password prompt and rich's live Markdown all run as
they do for a user. Assertions read what reached the screen.
"""

from __future__ import annotations

import signal
import time

import pexpect
from chatcore.privacy import EMAIL_NOTICE

from tests.client.conftest import REPO
from tests.client.terminal import PROMPT, user_args
from tests.client.v1_peer import GOODBYE, V1Peer
from tests.fixtures.server import PASSWORD, USER


def _last_user_message(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


def test_session_end_to_end(live_server, spawn):
    standin = live_server.standin
    c = spawn(user_args(live_server.port))
    c.login(PASSWORD)
    welcome = c.expect(PROMPT)
    assert "llama3.2" in welcome  # the model name from the server's hello
    assert "/help" in welcome

    # An answer that grows while it streams: its first words are on screen
    # while its later words have not been generated yet.
    c.type("tell me [standin:delay-ms=250] [standin:tokens=24]")
    c.expect("Echo: tell me")
    seen_so_far = c.transcript.getvalue() + c.child.buffer
    assert "magna" not in seen_so_far  # the 20th word comes ~4 s later
    assert PROMPT not in c.child.buffer
    c.expect("magna")
    c.expect(PROMPT)

    # Same conversation: the server sends the model the earlier turn.
    c.run("and more", "Echo: and more")
    requests = standin.wait_for_requests(2)
    assert _last_user_message(requests[1]) == "and more"
    assert any("tell me" in m["content"] for m in requests[1]["body"]["messages"][:-1])

    # A privacy refusal: the original notice, and nothing sent.
    c.run("mail me at bob@example.com", EMAIL_NOTICE)
    assert len(standin.requests()) == 2

    # /history shows this conversation, rendered.
    shown = c.run("/history", "assistant")
    assert "tell me" in shown and "Echo: and more" in shown and "magna" in shown

    # /new: a fresh conversation, the model no longer sees the old turns.
    c.run("/new", "new conversation")
    c.run("fresh start", "Echo: fresh start")
    requests = standin.wait_for_requests(3)
    assert _last_user_message(requests[2]) == "fresh start"
    assert not any("tell me" in m["content"] for m in requests[2]["body"]["messages"])
    shown = c.run("/history", "assistant")
    assert "Echo: fresh start" in shown and "tell me" not in shown

    # /help lists the commands.
    shown = c.run("/help", "Keys:")
    for command in ("/new", "/history", "/quit"):
        assert command in shown

    c.type("/quit")
    c.expect("Bye.")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 0

    # The typed password was never shown; the history file has the messages
    # but not the refused one.
    assert PASSWORD not in c.transcript.getvalue()
    history = c.history_file.read_text()
    assert "tell me" in history and "/new" in history
    assert "bob@example.com" not in history


def test_alt_enter_inserts_a_newline(live_server, spawn):
    c = spawn(user_args(live_server.port))
    c.login(PASSWORD)
    c.expect(PROMPT)
    c.child.send("line one")
    c.child.send("\x1b\r")  # Alt-Enter as a terminal sends it
    c.run("line two", "Echo: line one")
    [request] = live_server.standin.wait_for_requests(1)
    assert _last_user_message(request) == "line one\nline two"


def test_ctrl_c_stops_the_answer_not_the_program(live_server, spawn):
    c = spawn(user_args(live_server.port))
    c.login(PASSWORD)
    c.expect(PROMPT)
    c.type("long one [standin:delay-ms=200] [standin:tokens=300]")
    c.expect("Echo: long one")
    c.child.sendintr()
    c.expect("answer stopped")
    c.expect(PROMPT)
    [request] = live_server.standin.wait_for_requests(1)
    assert request["tokens_sent"] < 300
    # Still connected: the next question is answered.
    c.run("still there?", "Echo: still there?")
    c.child.sendcontrol("d")  # Ctrl-D leaves cleanly
    c.expect("Bye.")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 0


def test_server_notice_is_shown(live_server, spawn):
    # A banned word: the server's moderation notice, visibly marked.
    word = next(w.strip() for w in (REPO / "cuss_words.txt").read_text().splitlines()
                if w.strip() and not w.startswith("#"))
    c = spawn(user_args(live_server.port))
    c.login(PASSWORD)
    c.expect(PROMPT)
    shown = c.run(f"you {word}", "moderation:")
    assert "refused" in shown.lower() or "cuss" in shown.lower()
    assert live_server.standin.requests() == []


def test_lost_connection_says_so_and_exits_6(live_server, spawn):
    # Reconnecting off (tests/client/test_reconnect.py covers it being on).
    c = spawn(user_args(live_server.port), CHAT_RECONNECT_ATTEMPTS="0")
    c.login(PASSWORD)
    c.expect(PROMPT)
    live_server.stop(signal.SIGKILL)
    # No key pressed: the prompt notices by itself.
    c.expect("closed the connection")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 6


def test_disabled_account_ends_the_session_with_exit_3_and_no_reconnect(server_factory, spawn):
    # Reconnecting stays on: a revoked session must not try it.
    server = server_factory(CHAT_ACCOUNT_CHECK_INTERVAL="0.2")
    c = spawn(user_args(server.port))
    c.login(PASSWORD)
    c.expect(PROMPT)
    assert server.cli("users", "disable", USER).returncode == 0
    # No key pressed: the prompt notices by itself.
    c.expect("disabled or removed")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 3
    assert "Password:" not in c.transcript.getvalue().split("disabled or removed")[1]
    assert server.log_text().count("event=auth_ok") == 1


def test_bad_password_on_the_terminal_exits_3(live_server, spawn):
    c = spawn(user_args(live_server.port))
    c.login("not the password")
    c.expect("authentication failed")
    c.child.expect(pexpect.EOF)
    c.child.close()
    assert c.child.exitstatus == 3
    assert "not the password" not in c.transcript.getvalue()


def test_v1_interactive_ctrl_c_cannot_cancel(spawn):
    peer = V1Peer(users={"alice": "secret"}).start()
    try:
        c = spawn(["--protocol", "v1", "--host", "127.0.0.1", "--port", str(peer.port),
                   "--user", "alice"])
        c.login("secret")
        welcome = c.expect(PROMPT)
        assert "protocol v1" in welcome
        c.run("hello peer", "the end.")
        c.type("/quit")
        c.expect("Bye.")
        c.child.expect(pexpect.EOF)
        c.child.close()
        assert c.child.exitstatus == 0
        assert peer.received == ["hello peer"]
        assert peer.frames[-1] == GOODBYE
    finally:
        peer.stop()


def _wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_v1_ctrl_c_says_it_cannot_cancel_and_a_second_one_disconnects(spawn):
    peer = V1Peer(users={"alice": "secret"}, delay=2.0).start()
    try:
        c = spawn(["--protocol", "v1", "--host", "127.0.0.1", "--port", str(peer.port),
                   "--user", "alice"])
        c.login("secret")
        c.expect(PROMPT)
        c.type("first")
        _wait_until(lambda: peer.received == ["first"])  # the client is waiting now
        c.child.sendintr()
        c.expect("cannot stop an answer")
        c.expect("the end.")  # the whole answer still arrives; the session goes on
        c.expect(PROMPT)
        c.type("second")
        _wait_until(lambda: peer.received == ["first", "second"])
        c.child.sendintr()
        c.expect("cannot stop an answer")
        c.child.sendintr()
        c.expect("disconnected")
        c.child.expect(pexpect.EOF)
        c.child.close()
        assert c.child.exitstatus == 130
    finally:
        peer.stop()
