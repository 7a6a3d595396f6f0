"""v2 liveness: the client answers a server's PING with a PONG, even mid-answer.

Our server does not ping yet, so a small scripted v2 peer (our codec in the
SERVER role, over a real socket) pings the client while it waits for an answer
and only answers once the matching PONG arrived.
"""

from __future__ import annotations

import socket
import threading

from chatcore.protocol import (
    NEED_DATA,
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    ChatMessage,
    ClientHello,
    Connection,
    Error,
    ErrorCode,
    Event,
    Ping,
    Pong,
    Role,
    ServerHello,
)

from tests.client.conftest import client_env, run_client


class PingingPeer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.pongs: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn_sock, _ = self.sock.accept()
        conn_sock.settimeout(20)
        conn = Connection(Role.SERVER)
        with conn_sock:
            def next_event() -> Event:
                while True:
                    event = conn.next_event()
                    if event is not NEED_DATA:
                        return event  # type: ignore[return-value]
                    conn.receive_data(conn_sock.recv(65536))

            def send(event: Event) -> None:
                conn_sock.sendall(conn.send(event))

            assert isinstance(next_event(), ClientHello)
            send(ServerHello(version=2, agent="pinging-peer", model="ping-model"))
            assert isinstance(next_event(), Authenticate)
            send(AuthResult(ok=True, user="alice"))
            message = next_event()
            assert isinstance(message, ChatMessage)
            send(Ping(nonce="are-you-there"))
            reply = next_event()
            if isinstance(reply, Pong):
                self.pongs.append(reply.nonce)
                send(AnswerDelta(text="got your pong", message_id=message.message_id))
                send(AnswerEnd(message_id=message.message_id))
            else:
                send(Error(ErrorCode.MODEL_ERROR, f"no pong: {reply!r}", message.message_id))
            next_event()  # the client's Bye


def test_client_answers_ping_with_pong():
    peer = PingingPeer()
    r = run_client(["--host", "127.0.0.1", "--port", str(peer.port), "--user", "alice",
                    "--message", "ping me"], env=client_env(CHAT_PASSWORD="pw"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "got your pong\n"
    assert peer.pongs == ["are-you-there"]
    peer.sock.close()
