"""
Shared helpers of the hostile-input and fault-injection suites.

The attacker side talks raw sockets and parses the server's replies with its
own tiny readers (v2: ``TYPE LENGTH`` header + JSON body; v1: the bare strings
and 64-byte chunks of docs/PROTOCOL.md §9), not with the codec under test, so a
codec bug cannot hide itself. Well-behaved clients are the blocking test
clients of ``tests/server/clients.py``.

:class:`Guard` holds the invariants every attack must keep: a well-behaved
client is served, no ``Traceback`` in the server log, the process is alive,
and its RSS comes back near the baseline taken before the attack.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psutil
from chatcore.protocol import ErrorCode
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import LiveServer
from tests.fixtures.v1client import OriginalV1Client, answer_text
from tests.server.clients import logged_in, wait_until

HEADER = 64
V1_TERMINATOR = b" " * HEADER
V1_GOODBYE = b"<GoodBye>"
V1_INVALID_USERNAME = b"invalid username : closing connection"
V1_INVALID_PASSWORD = b"invalid password : closing connection"
_V2_HEADER = re.compile(rb"([A-Z][A-Z_]{0,15}) ([0-9]{1,10}) *")

#: RSS may drift a little after an attack (allocator arenas, caches); an attack
#: that buffers what it is sent would show up as megabytes.
RSS_TOLERANCE = 6 * 2**20


# ---------------------------------------------------------------------------- raw sockets
#: A second client address: Linux routes all of 127.0.0.0/8 to the loopback
#: interface, so a socket bound to it reaches the server on 127.0.0.1 as another client.
OTHER_ADDRESS = "127.0.0.2"


def raw(port: int, timeout: float = 10.0, *, rcvbuf: int | None = None,
        source: str | None = None) -> socket.socket:
    """A TCP connection to the server on 127.0.0.1. ``rcvbuf`` sets SO_RCVBUF
    before connecting (a small one keeps the kernel from soaking up what a stuck
    reader is sent); ``source`` is the client address to connect from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Everything the server sends until it closes. Fails if it does not close
    within ``timeout`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"server did not close the connection; got {data[:300]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """sendall, but False instead of an exception once the server has closed."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def v2_frame(frame_type: str, body: dict[str, Any] | bytes) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return f"{frame_type} {len(data)}".encode().ljust(HEADER) + data


def v1_frame(text: str | bytes) -> bytes:
    body = text.encode() if isinstance(text, str) else text
    return str(len(body)).encode().ljust(HEADER) + body


def parse_v2(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The complete v2 frames in ``data`` (a trailing partial frame is ignored)."""
    frames = []
    while len(data) >= HEADER:
        m = _V2_HEADER.fullmatch(data[:HEADER])
        assert m is not None, f"not a v2 header: {data[:HEADER]!r}"
        n = int(m.group(2))
        if len(data) < HEADER + n:
            break
        frames.append((m.group(1).decode(), json.loads(data[HEADER:HEADER + n])))
        data = data[HEADER + n:]
    return frames


def v2_error_codes(data: bytes) -> list[str]:
    return [body["code"] for kind, body in parse_v2(data) if kind == "ERROR"]


def v1_chunks(data: bytes) -> list[bytes]:
    return [data[i:i + HEADER] for i in range(0, len(data), HEADER)]


def v1_error_text(data: bytes) -> str:
    """The ``[ERROR] code: message`` text of a v1 chat-state error reply."""
    body = b"".join(c for c in v1_chunks(data) if c.strip() != V1_GOODBYE and c != V1_TERMINATOR)
    return body.decode("ascii", "replace").strip()


def v2_login(port: int, user: str, password: str, *, rcvbuf: int | None = None,
             source: str | None = None) -> socket.socket:
    """A raw v2 connection, logged in, with nothing unread."""
    sock = raw(port, rcvbuf=rcvbuf, source=source)
    sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "hostile/1"}))
    sock.sendall(v2_frame("AUTH", {"user": user, "password": password}))
    data = b""
    while not any(kind == "AUTH_RESULT" for kind, _ in parse_v2(data)):
        chunk = sock.recv(65536)
        assert chunk, f"closed during login: {data!r}"
        data += chunk
    [result] = [body for kind, body in parse_v2(data) if kind == "AUTH_RESULT"]
    assert result["ok"] is True, result
    return sock


def v1_login(port: int, user: str, password: str) -> socket.socket:
    sock = raw(port)
    sock.sendall(v1_frame(user))
    assert sock.recv(64) == b" username accepted"
    sock.sendall(v1_frame(password))
    assert sock.recv(64) == b" password accepted"
    return sock


# ---------------------------------------------------------------------------- metrics
_METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")
#: Never send loopback test traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def connections_rejected(server: LiveServer) -> float:
    """``chat_connections_rejected_total`` summed over its reasons (the server
    must run with ``CHAT_METRICS_PORT=0``)."""
    m = server.wait_for_log(_METRICS_LINE)
    with _OPENER.open(f"http://127.0.0.1:{m.group(2)}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "chat_connections_rejected_total")


# ---------------------------------------------------------------------------- invariants
def rss(server: LiveServer) -> int:
    return int(psutil.Process(server.pid).memory_info().rss)


def v2_chat_works(server: LiveServer, user: str, password: str, text: str = "still serving?") -> None:
    client = logged_in(server.port, user, password)
    try:
        reply = client.chat(text)
        for _ in range(50):
            # The previous test's answer may still be storing itself (one answer
            # in flight per user): BUSY is the documented reply, try again.
            if reply.error is None or reply.error.code is not ErrorCode.BUSY:
                break
            time.sleep(0.1)
            reply = client.chat(text)
        assert reply.end is not None, reply.events
        assert reply.text.startswith(f"Echo: {text}"), reply.text
    finally:
        client.close()


def v1_chat_works(server: LiveServer, user: str, password: str, text: str = "v1 still serving?") -> None:
    client = OriginalV1Client(server.port)
    try:
        assert client.login(user, password) == (b" username accepted", b" password accepted")
        assert answer_text(client.chat(text)).startswith(f"Echo: {text}")
    finally:
        client.close()


@dataclass
class Guard:
    """Before an attack: warm the server up over both protocols and take its
    RSS. After: the invariants (see the module docstring)."""

    server: LiveServer
    user: str
    password: str
    baseline: int = 0
    log_offset: int = 0

    def __post_init__(self) -> None:
        self.log_offset = len(self.server.log_text())
        # Warm every code path the attack and the checks touch, so that first-use
        # allocations (imports, caches) are in the baseline, not in the delta.
        for _ in range(2):
            v2_chat_works(self.server, self.user, self.password, "warm up")
            v1_chat_works(self.server, self.user, self.password, "warm up v1")
        self.baseline = rss(self.server)

    def new_log(self) -> str:
        return self.server.log_text()[self.log_offset:]

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until every session opened since the guard started has closed."""
        def settled() -> bool:
            log = self.new_log()
            return log.count("connection closed") >= log.count("connection opened")
        wait_until(settled, timeout=timeout)

    def served(self) -> None:
        v2_chat_works(self.server, self.user, self.password)

    def check(self, *, tolerance: int = RSS_TOLERANCE) -> None:
        assert self.server.proc is not None and self.server.proc.poll() is None, "server died"
        self.served()
        log = self.server.log_text()[self.log_offset:]
        assert "Traceback" not in log, log[-4000:]
        # Sessions end asynchronously after the sockets close: poll, then judge.
        try:
            wait_until(lambda: rss(self.server) <= self.baseline + tolerance, timeout=10)
        except AssertionError:
            grown = (rss(self.server) - self.baseline) / 2**20
            raise AssertionError(f"server RSS grew by {grown:.1f} MiB and stayed there") from None
