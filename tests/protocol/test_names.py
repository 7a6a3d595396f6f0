"""Names on the wire (conversation ids, model and backend names, agent strings)
are bounded and free of control characters (docs/PROTOCOL.md §4): a frame that
breaks the rule is refused as it is decoded, before the server does anything
with the message, and no event that breaks it can be built to be sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chatcore import protocol as p
from chatcore.protocol import (
    MAX_NAME_LENGTH,
    Connection,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
    name_problem,
)
from hypothesis import given
from hypothesis import strategies as st

from .helpers import ConnectionPair, feed

LONGEST = "c" * MAX_NAME_LENGTH
TOO_LONG = "c" * (MAX_NAME_LENGTH + 1)
CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]


def v2_frame(frame_type: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, ensure_ascii=False).encode()
    return f"{frame_type} {len(data)}".encode().ljust(64) + data


def logged_in_server() -> Connection:
    pair = ConnectionPair(version=2)
    pair.send(Role.CLIENT, p.ClientHello())
    pair.send(Role.SERVER, p.ServerHello(model="m"))
    pair.send(Role.CLIENT, p.Authenticate(user="alice", password="secret"))
    pair.send(Role.SERVER, p.AuthResult(ok=True, user="alice"))
    assert pair.server.state is State.CHATTING
    return pair.server


def client_waiting_for_hello() -> Connection:
    client = Connection(Role.CLIENT, version=2)
    client.send(p.ClientHello())
    return client


def refused(conn: Connection, data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, data)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert conn.state is State.ERROR
    return str(info.value)


def test_name_problem_says_why() -> None:
    assert name_problem("") is None
    assert name_problem(LONGEST) is None
    assert name_problem("llama3.2:1b-instruct-q4_K_M") is None
    assert name_problem("café ☕ 会话") is None
    assert name_problem(TOO_LONG) == f"is longer than {MAX_NAME_LENGTH} characters"
    assert name_problem("a\nb") == "contains a control character"


def test_the_bound_counts_characters_not_bytes() -> None:
    # 256 three-byte characters: 768 bytes of UTF-8, still within the bound.
    wide = "会" * MAX_NAME_LENGTH
    server = logged_in_server()
    events = feed(server, v2_frame("CHAT", {"id": 1, "conversation": wide, "text": "hi"}))
    assert events == [p.ChatMessage(text="hi", conversation=wide, message_id=1)]


def test_chat_with_a_conversation_id_of_the_longest_length_is_accepted() -> None:
    server = logged_in_server()
    events = feed(server, v2_frame("CHAT", {"id": 1, "conversation": LONGEST, "text": "hi"}))
    assert events == [p.ChatMessage(text="hi", conversation=LONGEST, message_id=1)]


def test_chat_with_an_over_long_conversation_id_is_refused_as_it_arrives() -> None:
    why = refused(logged_in_server(),
                  v2_frame("CHAT", {"id": 1, "conversation": TOO_LONG, "text": "hi"}))
    assert why == f"invalid CHAT frame: conversation is longer than {MAX_NAME_LENGTH} characters"
    assert TOO_LONG not in why  # no echo of the peer's bytes


@pytest.mark.parametrize("field", ["conversation", "model"])
@pytest.mark.parametrize("control", ["\x00", "\n", "\x1b", "\x7f", "\x85"],
                         ids=["nul", "newline", "escape", "del", "c1-nel"])
def test_chat_names_with_a_control_character_are_refused(field: str, control: str) -> None:
    body = {"id": 1, field: f"a{control}b", "text": "hi"}
    why = refused(logged_in_server(), v2_frame("CHAT", body))
    assert why == f"invalid CHAT frame: {field} contains a control character"


def test_chat_with_an_over_long_model_name_is_refused() -> None:
    refused(logged_in_server(), v2_frame("CHAT", {"id": 1, "model": TOO_LONG, "text": "hi"}))


def test_client_hello_with_an_over_long_agent_is_refused() -> None:
    server = Connection(Role.SERVER)
    refused(server, v2_frame("HELLO", {"versions": [2], "agent": TOO_LONG}))


@pytest.mark.parametrize("body", [
    {"version": 2, "agent": TOO_LONG},
    {"version": 2, "model": TOO_LONG},
    {"version": 2, "model": "m", "models": ["m", TOO_LONG]},
    {"version": 2, "model": "m", "models": ["m", "n\n"]},
], ids=["agent", "model", "models-long", "models-control"])
def test_server_hello_with_a_bad_name_is_refused_by_the_client(body: dict[str, Any]) -> None:
    refused(client_waiting_for_hello(), v2_frame("HELLO", body))


@pytest.mark.parametrize("field", ["model", "backend"])
def test_end_with_a_bad_name_is_refused_by_the_client(field: str) -> None:
    pair = ConnectionPair(version=2)
    pair.send(Role.CLIENT, p.ClientHello())
    pair.send(Role.SERVER, p.ServerHello(model="m"))
    pair.send(Role.CLIENT, p.Authenticate(user="alice", password="secret"))
    pair.send(Role.SERVER, p.AuthResult(ok=True, user="alice"))
    pair.send(Role.CLIENT, p.ChatMessage(text="hi", message_id=1))
    refused(pair.client, v2_frame("END", {"id": 1, field: TOO_LONG}))


Build = Callable[[str], object]
BUILDERS: dict[str, Build] = {
    "ChatMessage.conversation": lambda v: p.ChatMessage(text="hi", conversation=v),
    "ChatMessage.model": lambda v: p.ChatMessage(text="hi", model=v),
    "ClientHello.agent": lambda v: p.ClientHello(agent=v),
    "ServerHello.agent": lambda v: p.ServerHello(agent=v),
    "ServerHello.model": lambda v: p.ServerHello(model=v),
    "ServerHello.models": lambda v: p.ServerHello(model="m", models=("m", v)),
    "AnswerEnd.model": lambda v: p.AnswerEnd(model=v),
    "AnswerEnd.backend": lambda v: p.AnswerEnd(backend=v),
}


@pytest.mark.parametrize("field", list(BUILDERS))
def test_no_event_with_a_bad_name_can_be_built(field: str) -> None:
    build = BUILDERS[field]
    build(LONGEST)  # the longest allowed is fine
    with pytest.raises(LocalProtocolError, match=f"longer than {MAX_NAME_LENGTH}"):
        build(TOO_LONG)
    with pytest.raises(LocalProtocolError, match="control character"):
        build("a\tb")


@given(value=st.text(st.characters(exclude_categories=["Cs"]), max_size=2 * MAX_NAME_LENGTH))
def test_a_conversation_id_is_accepted_exactly_when_it_is_a_name(value: str) -> None:
    server = logged_in_server()
    data = v2_frame("CHAT", {"id": 1, "conversation": value, "text": "hi"})
    ok = len(value) <= MAX_NAME_LENGTH and not any(c in CONTROLS for c in value)
    assert (name_problem(value) is None) == ok
    if ok:
        assert feed(server, data) == [p.ChatMessage(text="hi", conversation=value, message_id=1)]
    else:
        refused(server, data)


def test_user_names_are_left_to_the_server() -> None:
    # AUTH.user is the server's business (its own rules, the same generic
    # failure for every bad login: docs/PROTOCOL.md §4), not the codec's.
    server = Connection(Role.SERVER)
    feed(server, v2_frame("HELLO", {"versions": [2]}))
    server.send(p.ServerHello(model="m"))
    odd = "x" * 1000 + "\n"
    assert feed(server, v2_frame("AUTH", {"user": odd, "password": "pw"})) == [
        p.Authenticate(user=odd, password="pw")]
