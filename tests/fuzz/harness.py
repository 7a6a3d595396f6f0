"""
The invariant every fuzzer here checks, after h11's ``fuzz/afl-server.py``
(docs/SECURITY.md §5): whatever bytes arrive, in whatever pieces, the codec
either produces events or raises :class:`RemoteProtocolError`; nothing else
escapes. On top of that:

- memory bound: whenever ``next_event()`` asks for more data, what it holds is
  at most one incomplete frame within the current limit (64 + limit bytes), so
  an attacker can't make it buffer more than a frame;
- after a ``RemoteProtocolError``, ``error_reply()`` returns bytes (never
  raises), the state is CLOSED, and the codec never produces another event;
- the peer's progress is driven like a real server would: an Authenticate is
  accepted and a ChatMessage answered, so the post-login paths (bigger limit,
  answer writers) are reached too.

``feed()`` is shared by the Hypothesis tests and the atheris harness.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatcore.protocol import (
    HEADER_SIZE,
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
    LocalProtocolError,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    ServerHello,
    State,
)


class InvariantBroken(AssertionError):
    """The codec broke one of the invariants above."""


def _buffered(conn: Connection) -> int:
    return len(conn.trailing_data[0])


def _react(conn: Connection, event: object) -> None:
    """What a minimal server or client does with an event (may legitimately be
    refused by the state machine: LocalProtocolError is ignored)."""
    try:
        if conn.role is Role.SERVER:
            if isinstance(event, ClientHello):
                conn.send(ServerHello(version=2, agent="fuzz", model="m",
                                      limits={"max_frame_bytes": conn.max_frame_size}))
            elif isinstance(event, Authenticate):
                conn.send(AuthResult(ok=event.user != "reject", user=event.user))
            elif isinstance(event, ChatMessage):
                conn.send(AnswerDelta("answer " + event.text[:50], event.message_id))
                conn.send(AnswerEnd(event.message_id))
            elif isinstance(event, Ping):
                conn.send(Pong(event.nonce))
            elif isinstance(event, Bye):
                conn.send(Bye("bye"))
        elif isinstance(event, Ping):
            conn.send(Pong(event.nonce))
    except LocalProtocolError:
        pass


def feed(conn: Connection, pieces: Iterable[bytes], *, eof: bool = True) -> list[object]:
    """Feed ``pieces`` (then EOF) to ``conn`` and drain events, checking the
    invariants. Returns the events produced before any protocol error."""
    events: list[object] = []
    failed = False

    def drain() -> bool:
        nonlocal failed
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                if failed:
                    return False
                failed = True
                reply = conn.error_reply(exc)
                if not isinstance(reply, bytes):
                    raise InvariantBroken(f"error_reply returned {type(reply).__name__}") from None
                if conn.state is not State.CLOSED:
                    raise InvariantBroken(f"state after error_reply: {conn.state}") from None
                try:
                    late = conn.next_event()
                except RemoteProtocolError:
                    return False
                raise InvariantBroken(f"{late!r} after a protocol error") from None
            conn.data_to_send()
            if failed:
                raise InvariantBroken(f"event {event!r} after a protocol error")
            if event is NEED_DATA:
                limit = conn.frame_limit
                if _buffered(conn) > HEADER_SIZE + limit:
                    raise InvariantBroken(
                        f"holding {_buffered(conn)} bytes with a frame limit of {limit}")
                return True
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return False
            _react(conn, event)

    for piece in pieces:
        if not drain():
            return events
        if piece:
            conn.receive_data(piece)
    if drain() and eof:
        conn.receive_data(b"")
        drain()
    return events


def server() -> Connection:
    return Connection(Role.SERVER)


def v2_client() -> Connection:
    conn = Connection(Role.CLIENT, version=2)
    conn.send(ClientHello((2,), agent="fuzz"))
    return conn


def v1_client() -> Connection:
    conn = Connection(Role.CLIENT, version=1)
    conn.send(Authenticate("alice", "secret"))
    return conn


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out
