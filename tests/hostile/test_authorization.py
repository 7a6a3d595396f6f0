"""
Attacks by one logged-in user on another's data, against a live server.

A user names things the server keeps for everyone: conversation names, message
ids, session tokens, model names. None of these may reach another user's
conversation, answer or login (docs/SECURITY.md §11):

* a conversation name is looked up under the user who sends it: another user
  who names it (guessed, or seen over a shoulder) starts a conversation of
  their own, the model sees nothing of the first user's, and the first user's
  history gets nothing of theirs;
* a CANCEL names a message of the connection it arrives on, nothing else;
* a session token logs in its own user only, once (tests/auth/test_session_tokens.py
  has the rest of its life: expiry, passwd, disable, remove, BYE);
* a CHAT naming a model the server does not offer, however odd the name, is
  refused with one fixed sentence and reaches no model.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from chatcore.protocol import AnswerEnd, Authenticate, AuthResult, Cancel, EndReason, ErrorCode

from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.fixtures.standin import StandIn
from tests.server.clients import V2Client, logged_in

from ._support import Guard, parse_v2, raw, read_until_closed, v1_frame, v2_frame

MALLORY, MALLORY_PASSWORD = "mallory", "mallory's own passphrase"


@pytest.fixture(scope="module")
def mallory(shared_server: LiveServer) -> Iterator[str]:
    """A second user on the shared server: the attacker."""
    shared_server.add_user(MALLORY, MALLORY_PASSWORD)
    yield MALLORY
    shared_server.cli("users", "remove", MALLORY)


def _request_with(standin: StandIn, marker: str) -> dict[str, Any]:
    """The one model request whose last message carries ``marker``."""
    found = [r for r in standin.requests()
             if marker in str(r["body"].get("messages", [{}])[-1].get("content", ""))]
    assert len(found) == 1, found
    return found[0]


def _everything_the_model_read(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in request["body"]["messages"])


def test_a_conversation_name_belongs_to_the_user_who_sends_it(
        guard: Guard, mallory: str) -> None:
    shared_standin: StandIn = guard.server.standin
    conversation = f"team-notes-{secrets.token_hex(4)}"
    secret = f"alice-secret-{secrets.token_hex(6)}"
    probe = f"mallory-probe-{secrets.token_hex(6)}"
    alice = logged_in(guard.server.port, USER, PASSWORD)
    attacker = logged_in(guard.server.port, mallory, MALLORY_PASSWORD)
    try:
        assert alice.chat(f"remember {secret}", conversation).end is not None
        # Mallory names Alice's conversation: it is a new, empty one of hers.
        reply = attacker.chat(f"what was said before? {probe}", conversation)
        assert reply.end is not None, reply.events
        assert secret not in reply.text
        seen = _everything_the_model_read(_request_with(shared_standin, probe))
        assert secret not in seen
        # Alice goes on: her model reads her own turn, nothing of Mallory's.
        follow_up = f"alice-again-{secrets.token_hex(4)}"
        assert alice.chat(f"and now {follow_up}", conversation).end is not None
        seen = _everything_the_model_read(_request_with(shared_standin, follow_up))
        assert secret in seen and probe not in seen
    finally:
        alice.close()
        attacker.close()
    # The stored histories are apart too.
    assert all(probe not in turn["user"] for turn in guard.server.history(USER))
    mallorys = [turn for turn in guard.server.history(mallory) if turn["conversation"] == conversation]
    assert [probe in turn["user"] for turn in mallorys] == [True]
    guard.check()


def test_a_cancel_stops_only_the_answers_of_its_own_connection(
        guard: Guard, mallory: str) -> None:
    alice = logged_in(guard.server.port, USER, PASSWORD)
    attacker = logged_in(guard.server.port, mallory, MALLORY_PASSWORD)
    other_alice = logged_in(guard.server.port, USER, PASSWORD)
    try:
        mid = alice.start_chat("a slow answer [standin:tokens=30] [standin:delay-ms=20]")
        first = alice.next_event()  # the answer is under way
        # Every id a client could pick, from another user and from another
        # session of the same user: none of them is this connection's.
        for client in (attacker, other_alice):
            for guess in range(0, 20):
                client.send(Cancel(guess))
        reply = alice.collect(mid)
        end = reply.end
        assert end is not None and end.reason == EndReason.STOP, [first, *reply.events]
        assert end.answer_tokens == 30
        # The other sessions are still fine and answer.
        assert attacker.chat("still here").end is not None
        assert other_alice.chat("me too").end is not None
    finally:
        for client in (alice, attacker, other_alice):
            client.close()
    guard.check()


def test_a_token_never_logs_in_another_user(guard: Guard, mallory: str) -> None:
    attacker = V2Client(guard.server.port)
    result = attacker.login(mallory, MALLORY_PASSWORD)
    attacker.close()
    assert isinstance(result, AuthResult) and result.ok and result.token
    for name in (USER, USER.upper(), f"{USER} ", f"{mallory}\u200b"):
        client = V2Client(guard.server.port)
        try:
            client.send(Authenticate(name, token=result.token))
            verdict = client.next_event()
        finally:
            client.close()
        assert isinstance(verdict, AuthResult) and not verdict.ok, (name, verdict)
        assert verdict.token is None
    guard.check()


#: Names of models the server does not offer: a tag it lacks, paths, a URL,
#: format strings, markup, escapes, right-to-left text, the longest name the
#: protocol allows (docs/PROTOCOL.md §4).
ODD_MODEL_NAMES = [
    "llama3.2:70b", "llama3.3", "../../../../etc/passwd", "http://127.0.0.1:1/x",
    "%s%s%s%n", "{model}", "<script>alert(1)</script>", "\\u0000", "\u202etxt.exe",
    "ｌｌａｍａ３.２", "llama3.2\u200b", "llama3.2:latest\u00a0x", "x" * 256, "会" * 256,
    " ", "llama3.2 ",
]


@pytest.mark.parametrize("name", ODD_MODEL_NAMES, ids=range(len(ODD_MODEL_NAMES)))
def test_a_model_outside_the_offer_is_refused_without_echo_and_reaches_no_model(
        guard: Guard, name: str) -> None:
    shared_standin: StandIn = guard.server.standin
    marker = f"model-probe-{secrets.token_hex(6)}"
    client = logged_in(guard.server.port, USER, PASSWORD)
    try:
        reply = client.chat(f"hello {marker}", model=name)
    finally:
        client.close()
    if name.strip() in ("", "llama3.2"):
        # Blank is "the conversation's model"; blanks around a name are not
        # part of it (names compare as Ollama's do, docs/PROTOCOL.md §4).
        assert reply.end is not None and reply.end.model == "llama3.2", reply.events
        return
    error = reply.error
    assert error is not None and error.code is ErrorCode.UNKNOWN_MODEL, reply.events
    assert error.message == "that model is not offered here; HELLO lists the models"
    assert not any(isinstance(e, AnswerEnd) for e in reply.events)
    assert not [r for r in shared_standin.requests()
                if marker in str(r["body"].get("messages", [{}])[-1].get("content", ""))]
    guard.check()


def test_a_failed_login_reads_the_same_whether_or_not_the_account_exists(
        guard: Guard, mallory: str) -> None:
    """No reply tells an attacker which names are accounts: a wrong password
    for an existing, a disabled, an unknown and an impossible name, and a
    wrong token, get the same bytes over v2, and the same over v1 (each from
    an address of its own, so no throttle is in the way)."""
    guard.server.cli("users", "add", "dormant", "--password-stdin", stdin="dormant pw\n")
    guard.server.cli("users", "disable", "dormant")
    names = [mallory, "dormant", f"ghost-{secrets.token_hex(4)}", "no such name with spaces"]
    v2_replies, v1_replies = set(), set()
    for n, name in enumerate(names):
        for how in ("password", "token"):
            sock = raw(guard.server.port, source=f"127.0.8.{1 + 2 * n + (how == 'token')}")
            try:
                sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "enum/1"})
                             + v2_frame("AUTH", {"user": name, how: secrets.token_urlsafe(32)}))
                reply = read_until_closed(sock)
            finally:
                sock.close()
            frames = parse_v2(reply)
            assert frames[0][0] == "HELLO", frames
            v2_replies.add(repr(frames[1:]))
        sock = raw(guard.server.port, source=f"127.0.9.{1 + n}")
        try:
            sock.sendall(v1_frame(name) + v1_frame("wrong password"))
            v1_replies.add(read_until_closed(sock))
        finally:
            sock.close()
    assert len(v2_replies) == 1, v2_replies
    assert "'AUTH_RESULT', {'ok': False" in next(iter(v2_replies)), v2_replies
    assert len(v1_replies) == 1, v1_replies
    guard.check()
