"""
Blocking test clients for the server tests.

* :class:`V2Client` drives the v2 protocol through the shared codec.
* The original v1 client is ``tests.fixtures.v1client.OriginalV1Client``.
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
    ConnectionClosed,
    Error,
    Event,
    Notice,
    Role,
    ServerHello,
)


def raw_v2_frame(kind: str, body: dict[str, Any]) -> bytes:
    """A v2 frame built by hand, for sending what our codec refuses to send."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return f"{kind} {len(data)}".encode().ljust(64) + data


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
                 agent: str = "tests/1", sock: socket.socket | None = None) -> None:
        # ``sock``: an already connected socket, e.g. a TLS one (tests/fixtures/tls.py).
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
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

    def start_chat(self, text: str, conversation: str = "", model: str = "") -> int:
        mid = self.next_id
        self.next_id += 1
        self.send(ChatMessage(text, conversation=conversation, message_id=mid, model=model))
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
            if isinstance(event, (Bye, ConnectionClosed)):
                return reply  # nothing more can come

    def chat(self, text: str, conversation: str = "", model: str = "") -> Reply:
        return self.collect(self.start_chat(text, conversation, model))

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
