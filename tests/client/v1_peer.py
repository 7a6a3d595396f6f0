"""
A tiny v1-only chat server, written from docs/PROTOCOL.md §9 alone.

It behaves like the original server, byte for byte: header-framed requests,
bare login replies, ``invalid username``/``invalid password`` rejections that
close, the whole answer computed first and then sent as 64-byte chunks (the
last one padded) plus a terminator of 64 spaces, the cuss-word warning with
``<GoodBye>`` and a close, and ``[DISCONNECTED]…`` after the client's
``<GoodBye>``. It deliberately shares no code with ``chatcore`` so
``chat-client --protocol v1`` is proven against the format, not against our codec.

Extra switches for tests: ``close_mid_answer`` sends half the chunks then
closes; ``answer`` lets a test pick the reply (e.g. an ``[ERROR] …`` answer,
which is how our server reports errors to v1 clients).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = 64
USERNAME_ACCEPTED = b" username accepted"
PASSWORD_ACCEPTED = b" password accepted"
INVALID_USERNAME = b"invalid username : closing connection"
INVALID_PASSWORD = b"invalid password : closing connection"
GOODBYE = b"<GoodBye>"
DISCONNECTED = b"[DISCONNECTED]disconnected from server"
WARNING = b"[WARNING] use of cuss words are not allowed"
TERMINATOR = b" " * HEADER


def _pad(chunk: bytes) -> bytes:
    return chunk.ljust(HEADER, b" ")


def _chunks(answer: bytes) -> list[bytes]:
    return [_pad(answer[i:i + HEADER]) for i in range(0, len(answer), HEADER)]


def echo_answer(message: str) -> str:
    """Long enough to need several chunks, so streaming is exercised."""
    return f"Echo: {message}. " + "This answer comes from the v1 peer, " * 3 + "the end."


@dataclass
class V1Peer:
    users: dict[str, str] = field(default_factory=lambda: {"alice": "secret"})
    banned: frozenset[str] = frozenset({"darn"})
    answer: Callable[[str], str] = echo_answer
    close_mid_answer: bool = False
    #: Seconds of "thinking" before the answer: the original server computed
    #: the whole answer before sending its first chunk.
    delay: float = 0.0
    #: Every chat message received (not usernames or passwords), in order.
    received: list[str] = field(default_factory=list)
    #: Every raw frame body received, including logins and <GoodBye>.
    frames: list[bytes] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.create_server((self.host, 0))
        self.port = self._sock.getsockname()[1]
        self._stopping = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> V1Peer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._sock.close()

    # -- the original server's behaviour ------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_exactly(conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            part = conn.recv(n - len(data))
            if not part:
                return None
            data += part
        return data

    def _read_frame(self, conn: socket.socket) -> bytes | None:
        header = self._read_exactly(conn, HEADER)
        if header is None:
            return None
        length = int(header.decode("ascii").strip())
        body = self._read_exactly(conn, length) if length else b""
        if body is not None:
            with self._lock:
                self.frames.append(body)
        return body

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        user = self._read_frame(conn)
        if user is None:
            return
        name = user.decode("ascii", "replace")
        if name not in self.users:
            conn.sendall(INVALID_USERNAME)
            return
        conn.sendall(USERNAME_ACCEPTED)
        password = self._read_frame(conn)
        if password is None:
            return
        if password.decode("ascii", "replace") != self.users[name]:
            conn.sendall(INVALID_PASSWORD)
            return
        conn.sendall(PASSWORD_ACCEPTED)
        while True:
            body = self._read_frame(conn)
            if body is None:
                return
            if body == GOODBYE:
                conn.sendall(DISCONNECTED)
                return
            message = body.decode("ascii", "replace")
            with self._lock:
                self.received.append(message)
            if any(word in self.banned for word in message.split(" ")):
                conn.sendall(_pad(WARNING))
                conn.sendall(_pad(GOODBYE))
                return
            chunks = _chunks(self.answer(message).encode("ascii"))
            time.sleep(self.delay)
            if self.close_mid_answer:
                for chunk in chunks[: max(1, len(chunks) // 2)]:
                    conn.sendall(chunk)
                return
            for chunk in chunks:  # one write per chunk, as the original client needs
                conn.sendall(chunk)
            conn.sendall(TERMINATOR)
