"""The session rules docs/PROTOCOL.md settles (§4 to §6), against a real server:
what HELLO announces, queue positions, keepalive, idle, a client's errors,
refusals, cancel at any stage, and what a failed login leaves in the log."""

from __future__ import annotations

import re
import time
from pathlib import Path

from chatcore.protocol import (
    MAX_NAME_LENGTH,
    AnswerDelta,
    AnswerEnd,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ConnectionClosed,
    Error,
    ErrorCode,
    Notice,
    NoticeKind,
    Ping,
    Pong,
)

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import OriginalV1Client

from .clients import V2Client, logged_in, wait_until

SLOW = "[standin:tokens=200] [standin:delay-ms=25]"


def _frame(kind: str, body: str) -> bytes:
    data = body.encode()
    return f"{kind} {len(data)}".encode().ljust(64) + data


# -- HELLO ---------------------------------------------------------------------------


def test_hello_announces_the_frame_limit_before_login_and_after(server_factory):
    server = server_factory(CHAT_MAX_FRAME_BYTES="20000")
    client = V2Client(server.port)
    limits = client.hello.limits
    assert limits["max_unauthenticated_frame_bytes"] == 4096
    assert limits["max_frame_bytes"] == 20000
    assert limits["ping_timeout_ms"] == 20000
    # The announced limits are the ones enforced: 4097 bytes before login...
    client.sock.sendall(b"AUTH 4097".ljust(64))
    error = client.next_event()
    assert isinstance(error, Error) and error.code is ErrorCode.FRAME_TOO_LARGE
    client.close()
    # ...and after it, up to max_frame_bytes.
    client = logged_in(server.port, USER, PASSWORD)
    reply = client.chat("x" * 15000)
    assert reply.end is not None
    client.close()


# -- queue positions -----------------------------------------------------------------------


def test_a_wait_behind_the_users_other_session_has_a_queue_position(live_server):
    first = logged_in(live_server.port, USER, PASSWORD)
    second = logged_in(live_server.port, USER, PASSWORD)
    third = logged_in(live_server.port, USER, PASSWORD)
    holder = first.start_chat(f"hold {SLOW}")
    wait_until(lambda: live_server.standin.requests())
    mid2 = second.start_chat("second")
    notice2 = second.next_event()
    mid3 = third.start_chat("third")
    notice3 = third.next_event()
    for notice, mid, position in ((notice2, mid2, 1), (notice3, mid3, 2)):
        assert isinstance(notice, Notice) and notice.kind is NoticeKind.QUEUE, notice
        assert notice.message_id == mid and notice.position == position, notice
    first.send(Cancel(holder))
    assert first.collect(holder).end is not None
    reply3 = third.collect(mid3)
    # The third moved up to 1 when the second got its turn.
    assert [n.position for n in reply3.notices if n.kind is NoticeKind.QUEUE] == [1]
    assert second.collect(mid2).end is not None and reply3.end is not None
    for c in (first, second, third):
        c.close()


# -- keepalive and idle --------------------------------------------------------------------


def test_the_server_pings_a_quiet_connection_and_a_pong_keeps_it(server_factory):
    server = server_factory(CHAT_PING_INTERVAL="0.5", CHAT_PING_TIMEOUT="2")
    client = logged_in(server.port, USER, PASSWORD)
    nonces = []
    for _ in range(3):
        ping = client.next_event(timeout=10)
        assert isinstance(ping, Ping) and ping.nonce, ping
        nonces.append(ping.nonce)
        client.send(Pong(ping.nonce))
    assert len(set(nonces)) == 3
    assert client.chat("still here").end is not None
    client.close()


def test_a_peer_that_does_not_answer_the_ping_is_closed(server_factory):
    server = server_factory(CHAT_PING_INTERVAL="0.5", CHAT_PING_TIMEOUT="1")
    client = logged_in(server.port, USER, PASSWORD)
    assert isinstance(client.next_event(timeout=10), Ping)
    error = client.next_event(timeout=10)  # and we say nothing
    assert isinstance(error, Error) and error.code is ErrorCode.IDLE_TIMEOUT, error
    assert "PING" in error.message
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)
    server.wait_for_log("keepalive timeout")


def test_v1_sessions_are_never_pinged(server_factory):
    server = server_factory(CHAT_PING_INTERVAL="0.3")
    v1 = OriginalV1Client(server.port)
    assert v1.login(USER, PASSWORD)[1] == b" password accepted"
    v1.sock.settimeout(1.5)
    try:
        data = v1.sock.recv(64)
    except TimeoutError:
        data = b"(nothing)"
    assert data == b"(nothing)"
    v1.close()


def test_keepalive_traffic_does_not_keep_an_idle_session_open(server_factory):
    server = server_factory(CHAT_IDLE_TIMEOUT="2", CHAT_PING_INTERVAL="0")
    client = logged_in(server.port, USER, PASSWORD)
    deadline = time.monotonic() + 20
    client.sock.settimeout(0.3)
    closed_with = None
    while time.monotonic() < deadline and closed_with is None:
        client.send(Ping("are you there"))  # a client's own pings are not activity
        try:
            while True:
                event = client.next_event()
                if isinstance(event, Error):
                    closed_with = event
                    break
        except TimeoutError:
            pass
    assert closed_with is not None and closed_with.code is ErrorCode.IDLE_TIMEOUT, closed_with


# -- a client's errors --------------------------------------------------------------------


def test_a_clients_non_fatal_error_keeps_the_session_open(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.send(Error(ErrorCode.INTERNAL_ERROR, "could not render the last answer"))
    reply = client.chat("still there?")
    assert reply.end is not None and reply.text.startswith("Echo: still there?")
    live_server.wait_for_log("client reported an error: internal_error")
    client.close()


def test_a_clients_non_fatal_error_before_login_is_ignored_too(live_server):
    client = V2Client(live_server.port)
    client.send(Error(ErrorCode.INTERNAL_ERROR, "oops"))
    result = client.login(USER, PASSWORD)
    assert isinstance(result, AuthResult) and result.ok
    client.close()


def test_a_clients_fatal_error_ends_the_session_quietly(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.send(Error(ErrorCode.PROTOCOL_ERROR, "your frame was bad"))
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)


def test_a_body_with_a_duplicate_key_is_a_protocol_error(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.sock.sendall(_frame("CHAT", '{"id":1,"text":"hi","text":"bye"}'))
    error = client.next_event(timeout=10)
    assert isinstance(error, Error) and error.code is ErrorCode.PROTOCOL_ERROR
    assert "duplicate" in error.message


def test_an_over_long_conversation_id_is_refused_before_anything_is_done(live_server):
    # Not answered, then refused by the store ("not saved"): refused as the
    # frame arrives, before the model or the store see anything.
    client = logged_in(live_server.port, USER, PASSWORD)
    too_long = "c" * (MAX_NAME_LENGTH + 1)
    client.sock.sendall(_frame("CHAT", f'{{"id":1,"conversation":"{too_long}","text":"hi"}}'))
    error = client.next_event(timeout=10)
    assert isinstance(error, Error) and error.code is ErrorCode.PROTOCOL_ERROR
    assert error.message == (
        f"invalid CHAT frame: conversation is longer than {MAX_NAME_LENGTH} characters")
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)
    assert live_server.standin.requests() == []
    assert live_server.history(USER) == []


def test_a_conversation_id_of_the_longest_length_is_answered_and_stored(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    longest = "c" * MAX_NAME_LENGTH
    reply = client.chat("hi", conversation=longest)
    assert reply.end is not None, reply.events
    wait_until(lambda: live_server.history(USER))
    assert [t["conversation"] for t in live_server.history(USER)] == [longest]
    client.close()


def test_a_control_character_in_a_conversation_id_is_refused(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.sock.sendall(_frame("CHAT", '{"id":1,"conversation":"a\\u0000b","text":"hi"}'))
    error = client.next_event(timeout=10)
    assert isinstance(error, Error) and error.code is ErrorCode.PROTOCOL_ERROR
    assert "control character" in error.message
    assert live_server.history(USER) == []


# -- BYE ------------------------------------------------------------------------------------


def test_the_server_answers_bye_with_bye_and_closes_at_once(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.send(Bye("quit"))
    assert client.next_event(timeout=10) == Bye("goodbye")
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)


# -- refusals -------------------------------------------------------------------------------


def _refusal(client: V2Client, text: str) -> tuple[Notice, Error]:
    reply = client.chat(text)
    assert len(reply.events) == 2, reply.events
    notice, error = reply.events
    assert isinstance(notice, Notice) and isinstance(error, Error), reply.events
    return notice, error


def test_a_refusal_is_a_notice_then_an_error_with_the_same_text(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    words = Path(live_server.env["CHAT_CUSS_WORDS_FILE"]).read_text(encoding="utf-8")
    banned = next(w.strip() for w in words.splitlines() if w.strip() and not w.startswith("#"))
    for text, kind in ((f"you {banned}", NoticeKind.MODERATION),
                       ("mail me at bob@example.com", NoticeKind.PRIVACY)):
        notice, error = _refusal(client, text)
        assert notice.kind is kind and error.code is ErrorCode.REFUSED
        assert notice.message == error.message and notice.message
        assert notice.message_id == error.message_id
    client.close()


# -- cancel, at every stage -------------------------------------------------------------------


def _history_statuses(server) -> list[tuple[str, str]]:
    return [(t["user"], t["status"]) for t in server.history(USER)]


def test_cancel_in_the_same_write_as_its_chat_cancels_it(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    chat = client.conn.send(ChatMessage("never mind", message_id=1))
    cancel = client.conn.send(Cancel(1))
    client.sock.sendall(chat + cancel)
    reply = client.collect(1)
    assert reply.end is not None and reply.end.reason == "cancelled", reply.events
    assert not reply.text
    assert _history_statuses(live_server) == [("never mind", "cancelled")]
    assert live_server.history(USER)[0]["model"] == "llama3.2"
    client.close()


def test_cancel_right_after_chat_cancels_it(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat(f"long {SLOW}")
    client.send(Cancel(mid))
    reply = client.collect(mid)
    assert reply.end is not None and reply.end.reason == "cancelled", reply.events
    assert _history_statuses(live_server) == [(f"long {SLOW}", "cancelled")]
    client.close()


def test_cancel_while_waiting_behind_the_users_other_session_cancels_it(live_server):
    first = logged_in(live_server.port, USER, PASSWORD)
    second = logged_in(live_server.port, USER, PASSWORD)
    holder = first.start_chat(f"hold {SLOW}")
    wait_until(lambda: live_server.standin.requests())
    mid = second.start_chat("waiting")
    assert isinstance(second.next_event(), Notice)  # in line
    second.send(Cancel(mid))
    reply = second.collect(mid)
    assert reply.end is not None and reply.end.reason == "cancelled"
    assert len(live_server.standin.requests()) == 1  # it never reached the model
    first.send(Cancel(holder))
    first.collect(holder)
    assert sorted(_history_statuses(live_server)) == [
        (f"hold {SLOW}", "cancelled"), ("waiting", "cancelled")]
    # Stopped before it read its conversation, it still has the model it would
    # have had (the conversation's next message goes on with that model).
    assert reply.end.model == "llama3.2"
    assert {t["model"] for t in live_server.history(USER)} == {"llama3.2"}
    first.close()
    second.close()


def test_cancel_while_queued_for_a_generation_slot_cancels_it(server_factory):
    server = server_factory(users={USER: PASSWORD, "bob": "bob's password"},
                            CHAT_MAX_PARALLEL="1")
    bob = logged_in(server.port, "bob", "bob's password")
    holder = bob.start_chat(f"hold {SLOW}")
    wait_until(lambda: server.standin.requests())
    client = logged_in(server.port, USER, PASSWORD)
    mid = client.start_chat("queued")
    notice = client.next_event()
    assert isinstance(notice, Notice) and notice.kind is NoticeKind.QUEUE
    client.send(Cancel(mid))
    reply = client.collect(mid)
    assert reply.end is not None and reply.end.reason == "cancelled"
    bob.send(Cancel(holder))
    bob.collect(holder)
    assert len(server.standin.requests()) == 1
    assert _history_statuses(server) == [("queued", "cancelled")]
    bob.close()
    client.close()


def test_end_after_a_cancel_counts_the_tokens_produced_so_far(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat(f"count {SLOW}")
    reply = client.collect(mid, until=lambda e: isinstance(e, AnswerDelta))
    while len(reply.text.split()) < 4:
        reply.events.append(client.next_event())
    client.send(Cancel(mid))
    rest = client.collect(mid)
    end = rest.end
    assert isinstance(end, AnswerEnd) and end.reason == "cancelled"
    assert end.prompt_tokens == 0
    words = len((reply.text + rest.text).split())
    assert end.answer_tokens >= words >= 4
    [turn] = live_server.history(USER)
    assert turn["answer_tokens"] == end.answer_tokens and turn["status"] == "cancelled"
    client.close()


# -- logs -------------------------------------------------------------------------------------


def test_a_failed_logins_name_is_logged_only_for_an_existing_user(live_server):
    typed_password = "Tr0ub4dor&3-typed-in-the-name-field"
    for name in (typed_password, USER):
        client = V2Client(live_server.port)
        client.login(name, "wrong password")
        client.close()
    v1 = OriginalV1Client(live_server.port)
    v1.login(typed_password + "-v1", "wrong")
    v1.close()
    live_server.wait_for_log(re.compile(r"(?s)(login failed.*){3}"))
    live_server.wait_for_log(re.compile(r"(?s)(connection closed.*){3}"))
    log = live_server.log_text()
    assert typed_password not in log
    failed = [line for line in log.splitlines() if "login failed" in line]
    assert len(failed) == 3
    assert sum(f"user={USER}" in line for line in failed) == 1
    hashes = [m.group(1) for line in failed if (m := re.search(r"user_hash=([0-9a-f]{12})", line))]
    assert len(hashes) == 2 and hashes[0] != hashes[1]


def test_a_cancelled_turn_is_stored_even_if_the_client_leaves_at_once(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.sock.sendall(client.conn.send(ChatMessage("gone", message_id=1))
                        + client.conn.send(Cancel(1)))
    client.close()
    wait_until(lambda: live_server.history(USER))
    assert _history_statuses(live_server) == [("gone", "cancelled")]
