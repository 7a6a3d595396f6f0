"""
A v1 peer written the way the original terminal client talks (PROTOCOL-V1.md).

Deliberately independent of ``chatcore.protocol``: these bytes are what the
deployed server must accept from the unmodified original client, so the test
must not share the codec it is checking.
"""

from __future__ import annotations

import socket
import time

HEADER = 64
TERMINATOR = b" " * 64
GOODBYE = "<GoodBye>"
USERNAME_ACCEPTED = b" username accepted"
PASSWORD_ACCEPTED = b" password accepted"
DISCONNECTED = b"[DISCONNECTED]disconnected from server"
CUSS_WARNING = "[WARNING] use of cuss words are not allowed"


class V1Session:
    """One v1 connection: ``login``, ``chat``, ``goodbye``. Every read has a timeout."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> V1Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_frame(self, text: str) -> None:
        # Two send() calls, header then body, exactly like the original client.
        body = text.encode("ascii")
        self.sock.send(str(len(body)).encode("ascii").ljust(HEADER))
        self.sock.send(body)

    def recv_reply(self, expected_len: int) -> bytes:
        """A bare (unframed) reply. The original client does one recv(64); a reply
        split by TCP is reassembled here up to the length we expect."""
        data = self.sock.recv(64)
        deadline = time.monotonic() + self.timeout
        while data and len(data) < expected_len and time.monotonic() < deadline:
            more = self.sock.recv(64 - len(data))
            if not more:
                break
            data += more
        return data

    def recv_chunk(self) -> bytes:
        """One 64-byte answer chunk; b'' on EOF."""
        chunk = b""
        while len(chunk) < 64:
            more = self.sock.recv(64 - len(chunk))
            if not more:
                return chunk
            chunk += more
        return chunk

    def login(self, user: str, password: str) -> tuple[bytes, bytes]:
        self.send_frame(user)
        user_reply = self.recv_reply(len(USERNAME_ACCEPTED))
        self.send_frame(password)
        password_reply = self.recv_reply(len(PASSWORD_ACCEPTED))
        return user_reply, password_reply

    def chat(self, message: str) -> tuple[list[str], str]:
        """Send a message; return (chunks as text, how the answer ended).

        The end is ``"terminator"`` (64 spaces), ``"goodbye"`` (a chunk whose
        stripped text is <GoodBye>, the server closes) or ``"eof"``.
        """
        self.send_frame(message)
        chunks: list[str] = []
        while True:
            chunk = self.recv_chunk()
            if len(chunk) < 64:
                return chunks, "eof"
            if chunk == TERMINATOR:
                return chunks, "terminator"
            text = chunk.decode("ascii")
            if text.strip() == GOODBYE:
                return chunks, "goodbye"
            chunks.append(text)

    def goodbye(self) -> bytes:
        self.send_frame(GOODBYE)
        return self.recv_reply(len(DISCONNECTED))


def answer_text(chunks: list[str]) -> str:
    """The answer as the original client shows it (the last chunk's padding removed)."""
    return "".join(chunks).rstrip(" ")
