"""
Helpers for the codec tests (after h11/tests/helpers.py).

- :func:`drain` / :func:`feed` run a :class:`Connection`'s receive side until
  it needs data, whole or one byte at a time.
- :class:`ConnectionPair` joins a client and a server codec with an in-memory
  link, so every test exercises both directions.
- :func:`event_from_json` and :func:`bytes_from_json` read the conformance-vector
  encoding (tests/vectors/README.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from chatcore import protocol as p
from chatcore.protocol import NEED_DATA, Connection, ConnectionClosed, Event, Role

EVENT_TYPES: dict[str, type[Event]] = {
    name: getattr(p, name)
    for name in (
        "ClientHello",
        "ServerHello",
        "Authenticate",
        "AuthResult",
        "ChatMessage",
        "AnswerDelta",
        "AnswerEnd",
        "Error",
        "Notice",
        "Cancel",
        "Ping",
        "Pong",
        "Bye",
        "ConnectionClosed",
    )
}


def drain(conn: Connection) -> list[Event]:
    """Every event ``conn`` can produce from what it has, up to NEED_DATA or
    ConnectionClosed."""
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def feed(
    conn: Connection, data: bytes, *, bytewise: bool = False, eof: bool = False
) -> list[Event]:
    """Feed ``data`` (whole, or one byte at a time) and return the events."""
    events: list[Event] = []
    pieces: Iterable[bytes] = (data[i : i + 1] for i in range(len(data))) if bytewise else [data]
    for piece in pieces:
        if piece:
            conn.receive_data(piece)
        events += drain(conn)
    if eof:
        conn.receive_data(b"")
        events += drain(conn)
    return events


def feed_split(
    conn: Connection, data: bytes, cuts: Sequence[int], *, eof: bool = False
) -> list[Event]:
    """Feed ``data`` cut at the given offsets."""
    events: list[Event] = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            conn.receive_data(data[a:b])
            events += drain(conn)
    if eof:
        conn.receive_data(b"")
        events += drain(conn)
    return events


class ConnectionPair:
    """A client and a server codec joined by an in-memory link.

    :meth:`send` pushes events from one side through the link and returns what
    the other side received; automatic replies (``data_to_send()``) are
    delivered too, until both sides are quiet.
    """

    def __init__(self, version: int = 2, **limits: int) -> None:
        self.version = version
        self.client = Connection(Role.CLIENT, version=version, **limits)
        self.server = Connection(Role.SERVER, **limits)
        self.received: dict[Role, list[Event]] = {Role.CLIENT: [], Role.SERVER: []}

    def conn(self, role: Role) -> Connection:
        return self.client if role is Role.CLIENT else self.server

    def send(self, role: Role, *events: Event, bytewise: bool = False) -> list[Event]:
        """Send ``events`` from ``role``; return what the peer received."""
        data = b"".join(self.conn(role).send(e) for e in events)
        got = self.deliver(role.peer, data, bytewise)
        return got

    def deliver(self, to: Role, data: bytes, bytewise: bool = False) -> list[Event]:
        """Feed ``data`` (sent by ``to.peer``) to ``to``; return what it received."""
        got = feed(self.conn(to), data, bytewise=bytewise)
        self.received[to] += got
        # Automatic replies bounce until both sides are quiet.
        reply = self.conn(to).data_to_send()
        if reply:
            self.deliver(to.peer, reply, bytewise)
        return got

    def login(self, user: str = "alice", password: str = "secret") -> None:
        """HELLO (v2) and a successful login, checking what each side sees."""
        if self.version == 2:
            assert self.send(Role.CLIENT, p.ClientHello(agent="test")) == [
                p.ClientHello(agent="test")
            ]
            assert self.send(Role.SERVER, p.ServerHello(model="m")) == [p.ServerHello(model="m")]
        got = self.send(Role.CLIENT, p.Authenticate(user, password))
        if self.version == 1:
            # The username frame gets its automatic reply, which makes the
            # client send the password frame: the server saw both.
            got = self.received[Role.SERVER][-1:]
        assert got == [p.Authenticate(user, password)]
        assert self.send(Role.SERVER, p.AuthResult(True, user)) != []
        assert self.client.state is self.server.state is p.State.CHATTING


# -- conformance-vector encoding ---------------------------------------------------


def bytes_from_json(text: str) -> bytes:
    """Vectors store bytes as a string of code points U+0000..U+00FF."""
    return text.encode("latin-1")



def event_from_json(obj: dict[str, Any]) -> Event:
    fields = dict(obj)
    cls = EVENT_TYPES[fields.pop("type")]
    if cls is p.ClientHello and "versions" in fields:
        fields["versions"] = tuple(fields["versions"])
    if cls is p.ServerHello and "models" in fields:
        fields["models"] = tuple(fields["models"])
    if cls is p.Error:
        fields["code"] = p.ErrorCode(fields["code"])
    if cls is p.Notice:
        fields["kind"] = p.NoticeKind(fields["kind"])
    return cls(**fields)
