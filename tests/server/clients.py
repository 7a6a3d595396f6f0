"""
Blocking test clients for the server tests.

* :class:`OriginalV1Client` does exactly what the original terminal client does
  on the wire (PROTOCOL-V1.md): header and body in two ``send()`` calls,
  ``recv(64)`` for replies, a chunk of 64 spaces ends an answer. It does not use
  our codec, so it checks the server against the format, not against itself.
* :class:`V2Client` drives the v2 protocol through the shared codec.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from chatcore.protocol import (
    NEED_DATA,
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    ChatMessage,
    ClientHello,
    Connection,
    Error,
    Event,
    Notice,
    Role,
    ServerHello,
)

TERMINATOR = b" " * 64


def v1_frame(text: str) -> tuple[bytes, bytes]:
    body = text.encode()
    return str(len(body)).encode().ljust(64), body


class OriginalV1Client:
    """The original client's wire behaviour, byte for byte."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send_frame(self, text: str) -> None:
        header, body = v1_frame(text)
        self.sock.send(header)  # two separate send() calls, as the original does
        self.sock.send(body)

    def recv(self, n: int = 64) -> bytes:
        return self.sock.recv(n)

    def login(self, user: str, password: str) -> tuple[bytes, bytes]:
        self.send_frame(user)
        user_reply = self.recv(64)
        if user_reply == b"invalid username : closing connection":
            return user_reply, b""
        self.send_frame(password)
        return user_reply, self.recv(64)

    def read_chunk(self) -> bytes:
        """One 64-byte chunk (read-exactly, so the test is not at the mercy of TCP)."""
        buf = b""
        while len(buf) < 64:
            data = self.sock.recv(64 - len(buf))
            if not data:
                return buf
            buf += data
        return buf

    def chat(self, text: str) -> list[bytes]:
        """Send a message; return the chunks up to and including the terminator
        (or ``<GoodBye>``, or the connection closing)."""
        self.send_frame(text)
        chunks = []
        while True:
            chunk = self.read_chunk()
            chunks.append(chunk)
            if chunk == TERMINATOR or chunk.strip() == b"<GoodBye>" or len(chunk) < 64:
                return chunks

    def disconnect(self) -> bytes:
        self.send_frame("<GoodBye>")
        return self.recv(2048)

    def close(self) -> None:
        self.sock.close()


def raw_v2_frame(kind: str, body: dict[str, Any]) -> bytes:
    """A v2 frame built by hand, for sending what our codec refuses to send."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return f"{kind} {len(data)}".encode().ljust(64) + data


def answer_text(chunks: list[bytes]) -> str:
    """The answer text of a v1 chunk list (padding and terminator removed)."""
    body = b"".join(c for c in chunks if c != TERMINATOR)
    return body.decode("ascii").rstrip()


@dataclass
class Reply:
    """Everything the server sent for one chat message."""

    events: list[Event] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, AnswerDelta))

    @property
    def deltas(self) -> list[AnswerDelta]:
        return [e for e in self.events if isinstance(e, AnswerDelta)]

    @property
    def notices(self) -> list[Notice]:
        return [e for e in self.events if isinstance(e, Notice)]

    @property
    def end(self) -> AnswerEnd | None:
        return next((e for e in self.events if isinstance(e, AnswerEnd)), None)

    @property
    def error(self) -> Error | None:
        return next((e for e in self.events if isinstance(e, Error)), None)


class V2Client:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0,
                 agent: str = "tests/1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = Connection(Role.CLIENT, version=2)
        self.next_id = 1
        self.sock.sendall(self.conn.send(ClientHello((2,), agent=agent)))
        hello = self.next_event()
        assert isinstance(hello, ServerHello), hello
        self.hello: ServerHello = hello

    def send(self, event: Event) -> None:
        self.sock.sendall(self.conn.send(event))

    def next_event(self, timeout: float | None = None) -> Event:
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            event = self.conn.next_event()
            if out := self.conn.data_to_send():
                self.sock.sendall(out)
            if event is not NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data)

    def login(self, user: str, password: str) -> AuthResult | Error:
        self.send(Authenticate(user, password))
        event = self.next_event()
        assert isinstance(event, (AuthResult, Error)), event
        return event

    def start_chat(self, text: str, conversation: str = "") -> int:
        mid = self.next_id
        self.next_id += 1
        self.send(ChatMessage(text, conversation=conversation, message_id=mid))
        return mid

    def collect(self, mid: int, *, until: Any = None) -> Reply:
        """Events for message ``mid`` up to its END or ERROR."""
        reply = Reply()
        while True:
            event = self.next_event()
            reply.events.append(event)
            if until is not None and until(event):
                return reply
            if isinstance(event, (AnswerEnd, Error)) and getattr(event, "message_id", None) in (mid, None):
                return reply
            if isinstance(event, Bye):
                return reply

    def chat(self, text: str, conversation: str = "") -> Reply:
        return self.collect(self.start_chat(text, conversation))

    def bye(self) -> Event:
        self.send(Bye())
        return self.next_event()

    def close(self) -> None:
        self.sock.close()


def logged_in(port: int, user: str, password: str) -> V2Client:
    client = V2Client(port)
    result = client.login(user, password)
    assert isinstance(result, AuthResult) and result.ok, result
    return client


def wait_until(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy (not a timing assertion: a hang guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
