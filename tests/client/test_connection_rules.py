"""What the client's connection (chat_client.connection) accepts from a server
while it waits for the HELLO and the login verdict, against a scripted v2 peer
over a real socket (our server never sends these, but docs/PROTOCOL.md §5 lets
a server send them)."""

from __future__ import annotations

import socket
import threading

from chat_client.connection import ChatConnection
from chatcore.protocol import (
    NEED_DATA,
    AuthResult,
    Connection,
    Event,
    Notice,
    NoticeKind,
    Pong,
    Role,
    ServerHello,
)


def scripted_peer(replies: list[list[Event]]) -> int:
    """A v2 server on a real socket that answers the client's n-th frame with
    ``replies[n]`` and then waits for the client to close."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        sock, _ = listener.accept()
        sock.settimeout(10)
        conn = Connection(Role.SERVER)
        with sock, listener:
            for reply in replies:
                while conn.next_event() is NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                sock.sendall(b"".join(conn.send(event) for event in reply))
            while sock.recv(65536):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_a_pong_or_notice_before_the_verdict_does_not_fail_the_login() -> None:
    port = scripted_peer([
        [Notice(NoticeKind.INFO, "hi"), ServerHello(version=2, agent="peer", model="m")],
        [Pong(nonce="stray"), Notice(NoticeKind.INFO, "checking"),
         AuthResult(ok=True, user="alice")],
    ])
    conn = ChatConnection.connect("127.0.0.1", port)
    try:
        conn.handshake(5)
        conn.login("alice", "pw", 5)
        assert conn.user == "alice"
    finally:
        conn.close(bye=False)
