"""The v1 contract: the original terminal client, unmodified on the
wire, works against our server from connect to disconnect."""

from __future__ import annotations

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import TERMINATOR, OriginalV1Client, answer_text


def test_original_v1_client_full_session_byte_for_byte(live_server):
    client = OriginalV1Client(live_server.port)
    user_reply, password_reply = client.login(USER, PASSWORD)
    assert user_reply == b" username accepted"
    assert password_reply == b" password accepted"

    chunks = client.chat("hello there")
    assert chunks[-1] == TERMINATOR
    assert all(len(c) == 64 for c in chunks)
    assert TERMINATOR not in chunks[:-1]
    assert answer_text(chunks).startswith("Echo: hello there")

    # A second message in the same session gets its own complete answer.
    chunks = client.chat("and again")
    assert chunks[-1] == TERMINATOR
    assert answer_text(chunks).startswith("Echo: and again")

    assert client.disconnect() == b"[DISCONNECTED]disconnected from server"
    assert client.recv(64) == b""  # the server closed the connection
    client.close()


def test_v1_unknown_user_gets_the_same_bytes_as_a_wrong_password(live_server):
    replies = []
    for user, password in [(USER, "wrong password"), ("nobody-here", "wrong password")]:
        client = OriginalV1Client(live_server.port)
        replies.append(client.login(user, password))
        assert client.recv(64) == b""
        client.close()
    assert replies[0] == replies[1] == (b" username accepted", b"invalid password : closing connection")


def test_v1_banned_word_gets_warning_goodbye_and_close(live_server):
    client = OriginalV1Client(live_server.port)
    client.login(USER, PASSWORD)
    chunks = client.chat("you are an ABCXYZ!")
    assert chunks == [
        b"[WARNING] use of cuss words are not allowed".ljust(64),
        b"<GoodBye>".ljust(64),
    ]
    assert client.recv(64) == b""
    client.close()
    assert live_server.standin.requests() == []


def test_v1_non_ascii_answer_is_transliterated_and_stays_framed(live_server):
    import base64

    text = "“Quotes” and café — naïve\u2028" + " " * 70 + "end"
    directive = base64.b64encode(text.encode()).decode()
    client = OriginalV1Client(live_server.port)
    client.login(USER, PASSWORD)
    chunks = client.chat(f"[standin:say-b64={directive}]")
    assert chunks[-1] == TERMINATOR
    body = b"".join(chunks[:-1])
    body.decode("ascii")  # pure ASCII: the original client would crash otherwise
    assert TERMINATOR not in chunks[:-1]
    assert b'"Quotes" and cafe' in body
    assert body.rstrip().endswith(b"end")
    client.close()


def test_v1_personal_data_is_refused_readably_and_the_session_continues(live_server):
    client = OriginalV1Client(live_server.port)
    client.login(USER, PASSWORD)
    chunks = client.chat("call me at +91 98765 43210")
    assert chunks[-1] == TERMINATOR
    assert "you are not allowed to share phone number with the chat help" in answer_text(chunks)
    chunks = client.chat("hello again")
    assert answer_text(chunks).startswith("Echo: hello again")
    client.close()
    bodies = [r["body"] for r in live_server.standin.requests()]
    assert not any("98765" in str(b) for b in bodies)
