"""``chat-client --protocol v1`` against a v1-only peer written from docs/PROTOCOL.md §9.

The peer (``v1_peer.py``) behaves like the original server, so these tests
prove the client speaks the original format, independent of our server.
"""

from __future__ import annotations

import subprocess

from chatcore.privacy import EMAIL_NOTICE

from tests.client.conftest import client_env, run_client
from tests.client.v1_peer import GOODBYE, V1Peer, echo_answer


def _v1(peer: V1Peer, *args: str, user: str = "alice", password: str = "secret",
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_client(["--protocol", "v1", "--host", "127.0.0.1", "--port", str(peer.port),
                       "--user", user, *args], env=client_env(CHAT_PASSWORD=password),
                      stdin=stdin)


def test_oneshot_answer_across_chunks(v1_peer: V1Peer):
    r = _v1(v1_peer, "--message", "hello v1")
    assert r.returncode == 0, r.stderr
    # The whole multi-chunk answer, without the padding of its last chunk.
    assert r.stdout == echo_answer("hello v1") + "\n"
    assert r.stderr == ""
    assert v1_peer.received == ["hello v1"]
    # Username, password, the message, then a polite <GoodBye>.
    assert v1_peer.frames == [b"alice", b"secret", b"hello v1", GOODBYE]


def test_bad_password_and_unknown_user_exit_3(v1_peer: V1Peer):
    r = _v1(v1_peer, "--message", "hi", password="wrong")
    assert r.returncode == 3
    assert len(r.stderr.splitlines()) == 1 and "authentication failed" in r.stderr
    r = _v1(v1_peer, "--message", "hi", user="mallory")
    assert r.returncode == 3
    assert len(r.stderr.splitlines()) == 1
    assert v1_peer.received == []


def test_cuss_word_warning_exits_4(v1_peer: V1Peer):
    r = _v1(v1_peer, "--message", "well darn it")
    assert r.returncode == 4
    assert r.stderr.strip() == "chat-client: [WARNING] use of cuss words are not allowed"


def test_privacy_refusal_sends_nothing(v1_peer: V1Peer):
    r = _v1(v1_peer, "--message", "I am joe@example.org")
    assert r.returncode == 4
    assert r.stderr == EMAIL_NOTICE + "\n"
    assert v1_peer.frames == []


def test_error_answer_exits_5():
    peer = V1Peer(answer=lambda m: "[ERROR] model_error: the model failed while answering").start()
    try:
        r = _v1(peer, "--message", "hi")
    finally:
        peer.stop()
    assert r.returncode == 5
    assert r.stdout == ""
    [line] = r.stderr.splitlines()
    assert "model_error" in line and "the model failed while answering" in line


def test_peer_closing_mid_answer_exits_6():
    peer = V1Peer(close_mid_answer=True).start()
    try:
        r = _v1(peer, "--message", "hi")
    finally:
        peer.stop()
    assert r.returncode == 6
    assert r.stdout.startswith("Echo: hi")  # what arrived was printed
    assert len(r.stderr.splitlines()) == 1 and "closed" in r.stderr


def test_line_mode_without_tty(v1_peer: V1Peer):
    # No TTY: one message per line from stdin, plain answers, /quit says goodbye.
    r = _v1(v1_peer, stdin="first\nsecond\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == echo_answer("first") + "\n" + echo_answer("second") + "\n"
    assert v1_peer.received == ["first", "second"]
    assert v1_peer.frames[-1] == GOODBYE
    assert "\x1b[" not in r.stdout + r.stderr  # plain: no escape sequences
