"""The session rules docs/PROTOCOL.md settles (§4 to §6), against a real server:
what HELLO announces, queue positions, keepalive, idle, a client's errors,
refusals, cancel at any stage, and what a failed login leaves in the log."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path

from chat_server.config import HELLO_MODELS_BUDGET, hello_models_size
from chatcore.protocol import (
    MAX_NAME_LENGTH,
    AnswerDelta,
    AnswerEnd,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    Role,
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


def test_the_longest_model_list_the_config_accepts_fits_a_hello_before_login(server_factory):
    # The HELLO lists every offered model and is sent before login, when a
    # client refuses frames over 4096 bytes (docs/PROTOCOL.md §10): the config
    # refuses a list that would not fit, and the longest one it takes does.
    models = ["llama3.2"]
    while True:
        longer = [*models, f"some-org/a-rather-long-model-name-{len(models):03d}:latest"]
        if hello_models_size("llama3.2", tuple(longer)) > HELLO_MODELS_BUDGET:
            break
        models = longer
    server = server_factory(CHAT_MODELS=",".join(models), CHAT_PULL_MODEL="false")
    client = V2Client(server.port)  # our codec, with the limits of the spec
    assert list(client.hello.models) == models
    client.close()


def test_every_frame_after_login_fits_the_default_frame_limit(live_server):
    # A client does not announce its frame limit: the server's frames stay
    # within the default (65536 bytes), even for an answer longer than that
    # which reaches the server in one piece (docs/PROTOCOL.md §10).
    client = logged_in(live_server.port, USER, PASSWORD)  # our codec: default limits
    text = "語" * 21_000  # 63,000 bytes of UTF-8: the answer echoes it, and more
    reply = client.chat(f"[standin:burst] [standin:tokens=1000] {text}")
    assert reply.end is not None, [type(e).__name__ for e in reply.events]
    assert len(reply.text.encode()) > 65_536 and text in reply.text
    client.close()


def test_the_login_deadline_counts_from_the_connect_not_from_the_first_byte(server_factory):
    # auth_timeout_ms is "time from connecting to a successful login" (§4): a
    # client that waits before its first byte does not get a fresh deadline.
    server = server_factory(CHAT_AUTH_TIMEOUT="3")
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        connected = time.monotonic()
        time.sleep(2.5)
        conn = Connection(Role.CLIENT, version=2)
        sock.sendall(conn.send(ClientHello((2,))))
        # After the deadline (3 s from the connect), well before 3 s from the HELLO.
        time.sleep(max(0.0, connected + 4.2 - time.monotonic()))
        with contextlib.suppress(OSError):
            sock.sendall(_frame("AUTH", f'{{"user":"{USER}","password":"{PASSWORD}"}}'))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert re.findall(rb"([A-Z_]+) \d+ {2,}", data) == [b"HELLO", b"ERROR"], data
    assert b'"code":"auth_timeout"' in data


# -- BYE ------------------------------------------------------------------------------------


def test_the_server_answers_bye_with_bye_and_closes_at_once(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.send(Bye("quit"))
    assert client.next_event(timeout=10) == Bye("goodbye")
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)


def test_bye_before_login_is_answered_with_bye(live_server):
    # BYE is legal in every state after HELLO, and its receiver always
    # answers with its own BYE (docs/PROTOCOL.md §4, §5).
    client = V2Client(live_server.port)
    client.send(Bye("changed my mind"))
    assert client.next_event(timeout=10) == Bye("goodbye")
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)


def test_bye_while_an_answer_streams_is_answered_with_bye(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat(f"a long one {SLOW}")
    first = client.next_event(timeout=10)
    assert isinstance(first, AnswerDelta) and first.message_id == mid
    client.send(Bye("quit"))
    # DELTAs that crossed the BYE may still come; then the server's BYE, then EOF.
    rest = []
    while not isinstance(event := client.next_event(timeout=10), ConnectionClosed):
        rest.append(event)
    assert rest and rest[-1] == Bye("goodbye"), rest
    assert all(isinstance(e, AnswerDelta) for e in rest[:-1]), rest
    # The answer stopped, and what was said so far is stored as interrupted.
    wait_until(lambda: live_server.history(USER))
    assert [t["status"] for t in live_server.history(USER)] == ["interrupted"]


def test_bye_in_the_same_write_as_a_chat_is_answered_with_bye(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.sock.sendall(client.conn.send(ChatMessage(f"hi {SLOW}", message_id=1))
                        + client.conn.send(Bye("quit")))
    events = []
    while not isinstance(event := client.next_event(timeout=10), ConnectionClosed):
        events.append(event)
    assert events and events[-1] == Bye("goodbye"), events


# -- rate limit ------------------------------------------------------------------------------


def test_a_chat_refused_as_busy_does_not_count_towards_the_rate_limit(server_factory):
    server = server_factory(CHAT_RATE_LIMIT="2")
    client = logged_in(server.port, USER, PASSWORD)
    first = client.start_chat(f"first {SLOW}")
    assert isinstance(client.next_event(timeout=10), AnswerDelta)
    for _ in range(3):  # not taken: "this message was not processed"
        busy = client.collect(client.start_chat("too soon"))
        assert busy.error is not None and busy.error.code is ErrorCode.BUSY, busy.events
    client.send(Cancel(first))
    assert client.collect(first).end is not None
    second = client.chat("second")
    assert second.end is not None, second.events
    third = client.chat("third")  # the limit (2) is reached now
    assert third.error is not None and third.error.code is ErrorCode.RATE_LIMITED, third.events
    client.close()


def test_v1_goodbye_while_an_answer_streams_is_answered_with_the_disconnect_reply(live_server):
    # v1's BYE is the <GoodBye> frame; a client that does not wait for the
    # answer's end still gets the bare reply, after whole chunks only.
    def v1(body: bytes) -> bytes:
        return str(len(body)).encode().ljust(64) + body

    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        sock.sendall(v1(USER.encode()) + v1(PASSWORD.encode()) + v1(f"hi {SLOW}".encode()))
        data = b""
        while len(data) < 36 + 64:  # the login replies and a first chunk of the answer
            data += sock.recv(65536)
        sock.sendall(v1(b"<GoodBye>"))
        while chunk := sock.recv(65536):
            data += chunk
    disconnected = b"[DISCONNECTED]disconnected from server"
    assert data.endswith(disconnected), data[-100:]
    assert (len(data) - 36 - len(disconnected)) % 64 == 0


# -- pipelining ------------------------------------------------------------------------------


def test_frames_pipelined_behind_hello_and_auth_are_read_after_each_answer(live_server):
    # Clients must not pipeline, but our server reads a frame only after it has
    # answered the one before (docs/PROTOCOL.md §5): a pipelined AUTH is read
    # after the server's HELLO, and a CHAT behind it after AUTH_RESULT, so it is
    # judged by the frame limit after login (it is larger than the one before).
    text = "x" * 5000
    body = f'{{"id":1,"text":"{text}"}}'
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        conn = Connection(Role.CLIENT, version=2)
        sock.sendall(
            conn.send(ClientHello((2,)))
            + _frame("AUTH", f'{{"user":"{USER}","password":"{PASSWORD}"}}')
            + _frame("CHAT", body)
        )
        data = b""
        while b'"reason":"stop"' not in data:
            chunk = sock.recv(65536)
            assert chunk, data[-300:]
            data += chunk
    types = re.findall(rb"([A-Z_]+) \d+ {2,}", data)
    assert types[:2] == [b"HELLO", b"AUTH_RESULT"] and types[-1] == b"END", types
    assert b'"ok":true' in data and b"ERROR" not in types


def test_frames_pipelined_behind_a_failed_auth_are_dropped_with_the_connection(live_server):
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        sock.sendall(
            _frame("HELLO", '{"versions":[2]}')
            + _frame("AUTH", f'{{"user":"{USER}","password":"wrong"}}')
            + _frame("CHAT", '{"id":1,"text":"hi"}')
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert re.findall(rb"([A-Z_]+) \d+ {2,}", data) == [b"HELLO", b"AUTH_RESULT"]
    assert b'"ok":false' in data
    assert live_server.standin.requests() == []


def test_v1_frames_pipelined_behind_the_password_are_answered_after_the_verdict(live_server):
    # A chat frame bigger than the limit before login, in the same write as the
    # login: read only after the verdict, so judged by the limit after login.
    def v1(body: bytes) -> bytes:
        return str(len(body)).encode().ljust(64) + body

    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        sock.sendall(v1(USER.encode()) + v1(PASSWORD.encode()) + v1(b"y" * 5000))
        data = b""
        while not data.endswith(b" " * 64) or len(data) < 36 + 128:
            chunk = sock.recv(65536)
            assert chunk, data[-200:]
            data += chunk
    assert data.startswith(b" username accepted password acceptedEcho: yyy"), data[:100]
    assert b"[ERROR]" not in data


# -- the last frame before a close -------------------------------------------------------------


def _read_to_the_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the server sends, and how the connection ended: "eof" or "reset"."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    return data, "eof"


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(OSError):  # a reset ends it: that is what is checked
            sock.sendall(data)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_refused_oversized_frame_is_not_lost_to_a_reset_v2(live_server):
    # The header is refused before the body is read (frame_too_large); the
    # client is still sending that body. Closing with its bytes unread would
    # reset the connection, and a reset may discard the ERROR before the
    # client reads it: the server half-closes and drops what still comes.
    client = logged_in(live_server.port, USER, PASSWORD)
    size = 3 * client.hello.limits["max_frame_bytes"]
    sender = _send_in_background(client.sock, b"CHAT %d".ljust(64) % size + b"x" * size)
    data, end = _read_to_the_end(client.sock)
    sender.join(15)
    assert data.startswith(b"ERROR ") and b'"code":"frame_too_large"' in data, data
    assert end == "eof"
    client.close()


def test_a_refused_oversized_frame_is_not_lost_to_a_reset_v1(live_server):
    with OriginalV1Client(live_server.port) as client:
        client.login(USER, PASSWORD)
        size = 200_000
        sender = _send_in_background(client.sock, str(size).encode().ljust(64) + b"x" * size)
        data, end = _read_to_the_end(client.sock)
        sender.join(15)
    assert data.startswith(b"[ERROR] frame_too_large: "), data
    assert data.rstrip().endswith(b"<GoodBye>") and end == "eof"


# -- bodies ------------------------------------------------------------------------------------


def test_a_lone_surrogate_in_an_unknown_key_is_a_protocol_error(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.sock.sendall(_frame("CHAT", '{"id":1,"text":"hi","x":{"y":"\\udc80"}}'))
    error = client.next_event(timeout=10)
    assert isinstance(error, Error) and error.code is ErrorCode.PROTOCOL_ERROR, error
    assert isinstance(client.next_event(timeout=10), ConnectionClosed)
    assert live_server.standin.requests() == []


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
