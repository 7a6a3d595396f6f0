"""
The server's last words when *it* ends a session from elsewhere (the account
watch revoking a login, a shutdown, v1 moderation), while the client is still
sending: the fatal ERROR must be read, not lost to a TCP reset.

Closing a socket with the peer's bytes unread sends a reset, and a reset can
make the client's kernel drop what it had received but not yet read. So every
server-initiated close goes through the wire's lingering close: half-close
after the ERROR, drop what still comes until the client's EOF, then close.
Each test keeps a client sending PINGs (one every millisecond) right through
the end, reads everything, and checks that the ERROR came and the connection
ended with an EOF, not a reset (a reset here means the lingering close was
skipped). Real server process, real sockets.

Also: a v1 message pipelined behind an answer while the server shuts down is
refused in its turn, after that answer, with v1's form of ``shutting_down``
(docs/PROTOCOL.md §6, §9), as v2 refuses one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import socket
import threading
import time

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import TERMINATOR, OriginalV1Client
from tests.hostile._support import parse_v2, v1_frame, v2_frame
from tests.server.clients import logged_in, wait_until

PING = v2_frame("PING", {"nonce": "still sending"})


class Sender:
    """Sends ``frame`` every millisecond until stopped; ``error``: why a send
    failed (the server reset the connection), if one did."""

    def __init__(self, sock: socket.socket, frame: bytes) -> None:
        self.sock, self.frame = sock, frame
        self.sent = 0
        self.error: OSError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.sendall(self.frame)
            except OSError as exc:
                self.error = exc
                return
            self.sent += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def read_to_the_end(sock: socket.socket, sender: Sender, timeout: float = 30) -> tuple[bytes, str]:
    """Everything the server sends, and how it ended: "eof", or "reset" when
    the connection was reset, before the server's EOF or while the client went
    on sending for a while after it (as a client does until it has read the
    EOF and reacted). A server that closed outright answers those bytes with a
    reset, and a reset can cost the client the unread ERROR; one that closes
    lingering reads and drops them until the client's own EOF."""
    sock.settimeout(timeout)
    data, end = b"", "eof"
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        end = "reset"
    time.sleep(0.3)  # still sending, a PING a millisecond
    sender.stop()
    if sender.error is not None:
        end = "reset"
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    sock.close()
    return data, end


def test_a_client_sending_while_its_account_is_disabled_reads_the_error(server_factory):
    server = server_factory(CHAT_ACCOUNT_CHECK_INTERVAL="0.2", CHAT_RATE_LIMIT="0")
    client = logged_in(server.port, USER, PASSWORD)
    sender = Sender(client.sock, PING)
    wait_until(lambda: sender.sent > 50, timeout=10)
    r = server.cli("users", "disable", USER)
    assert r.returncode == 0, r.stderr
    data, end = read_to_the_end(client.sock, sender)
    errors = [body for kind, body in parse_v2(data) if kind == "ERROR"]
    assert [e["code"] for e in errors] == ["session_revoked"], data[-300:]
    assert end == "eof"
    # The PINGs before it were answered, so it really was sending throughout.
    assert sum(kind == "PONG" for kind, _ in parse_v2(data)) > 10


def test_a_v1_client_sending_while_its_password_changes_reads_the_error(server_factory):
    server = server_factory(CHAT_ACCOUNT_CHECK_INTERVAL="0.2", CHAT_RATE_LIMIT="0")
    with OriginalV1Client(server.port, timeout=30) as v1:
        v1.login(USER, PASSWORD)
        # v1 has no PING: a message whose frame never completes keeps the
        # client sending (one byte a millisecond) without being answered.
        v1.sock.sendall(str(60_000).encode().ljust(64))
        sender = Sender(v1.sock, b"x")
        wait_until(lambda: sender.sent > 50, timeout=10)
        r = server.cli("users", "passwd", USER, "--password-stdin", stdin="a new password\n")
        assert r.returncode == 0, r.stderr
        data, end = read_to_the_end(v1.sock, sender)
    assert data.startswith(b"[ERROR] session_revoked: "), data[:200]
    assert data.rstrip().endswith(b"<GoodBye>") and end == "eof"


def test_clients_sending_while_the_server_shuts_down_read_the_error(server_factory):
    server = server_factory(CHAT_RATE_LIMIT="0", CHAT_SHUTDOWN_GRACE="5")
    clients = [logged_in(server.port, USER, PASSWORD) for _ in range(8)]
    senders = [Sender(c.sock, PING) for c in clients]
    wait_until(lambda: all(s.sent > 50 for s in senders), timeout=10)
    stopper = threading.Thread(target=lambda: server.stop(signal.SIGTERM, timeout=60))
    stopper.start()
    # Each client reads as it would, at once (the server lingers for a
    # bounded time: LINGER_SECONDS, all sessions at the same time).
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(read_to_the_end, [c.sock for c in clients], senders))
    stopper.join(60)
    for data, end in results:
        errors = [body["code"] for kind, body in parse_v2(data) if kind == "ERROR"]
        assert errors == ["shutting_down"], data[-300:]
        assert end == "eof"


def test_a_v1_message_pipelined_behind_an_answer_during_shutdown_is_refused_after_it(
        server_factory):
    server = server_factory(CHAT_RATE_LIMIT="0", CHAT_SHUTDOWN_GRACE="20")
    with OriginalV1Client(server.port, timeout=30) as v1:
        v1.login(USER, PASSWORD)
        v1.sock.sendall(v1_frame("first [standin:tokens=40] [standin:delay-ms=30]"))
        first = v1.read_chunk()
        assert first.startswith(b"Echo: first"), first
        stopper = threading.Thread(target=lambda: server.stop(signal.SIGTERM, timeout=60))
        stopper.start()
        server.wait_for_log("shutting down", timeout=15)
        v1.sock.sendall(v1_frame("second, behind the first"))
        rest = b""
        while (chunk := v1.read_chunk()) and len(chunk) == 64:
            rest += chunk
            if chunk.strip() == b"<GoodBye>":
                break
        stopper.join(60)
    # The first answer ends whole (its terminator), then the second message is
    # refused in v1's form of shutting_down: not answered, and (as a refused
    # v2 CHAT) not taken: the history holds the first turn only.
    chunks = [rest[i:i + 64] for i in range(0, len(rest), 64)]
    assert TERMINATOR in chunks, rest
    after = b"".join(chunks[chunks.index(TERMINATOR) + 1:])
    assert b"Echo: second" not in rest
    assert after.startswith(b"[ERROR] shutting_down: "), after
    assert after.endswith(b"<GoodBye>".ljust(64)), after
    assert TERMINATOR not in chunks[chunks.index(TERMINATOR) + 1:]
    turns = server.history(USER)
    assert [t["status"] for t in turns] == ["complete"], turns
