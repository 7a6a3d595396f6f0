"""
A client that never reads (or reads very slowly) while a fast model answers.

What must hold (docs/ARCHITECTURE.md, "Backpressure"): the server stops reading
the model's output once a bounded amount is waiting for the client, so a stuck
reader costs a bounded amount of memory; the generation it paused holds its
model slot only until the write deadline cuts a reader that stopped altogether,
or the pause budget ends the generation of one that reads too slowly; the turn
is stored with what was sent; everyone else is served.

The model is the stand-in at full speed (no delay per token): much faster than
any real model, so the bound is reached at once.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import pytest
from chat_server.coalesce import ANSWER_BUFFER_LIMIT

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import logged_in, wait_until

from ._support import Guard, parse_v2, rss, v2_frame, v2_login

pytestmark = pytest.mark.hostile

#: Tokens of the stuck answer: megabytes of text, generated in seconds.
HUGE = 2_000_000
#: The server's RSS may grow by the bounded buffer plus allocator noise; an
#: unbounded buffer grows by ~10 MB per second with the stand-in at full speed.
RSS_BOUND = 16 * 2**20
OTHER = ("bob", "bob's long password")


def _request(server: Any, marker: str) -> dict[str, Any] | None:
    found = [r for r in server.standin.requests() if marker in str(r["body"])]
    return found[-1] if found else None


def _stuck_client(port: int, text: str) -> socket.socket:
    """Logged in, CHAT sent, and from now on nothing is read. A small receive
    buffer keeps the kernel from soaking up what the server would otherwise hold."""
    sock = v2_login(port, USER, PASSWORD, rcvbuf=4096)
    sock.sendall(v2_frame("CHAT", {"id": 1, "conversation": "", "text": text}))
    return sock


def test_client_that_never_reads_pauses_the_model_and_costs_a_bounded_buffer(server_factory) -> None:
    server = server_factory(users={USER: PASSWORD, OTHER[0]: OTHER[1]},
                            CHAT_MAX_PARALLEL="1", CHAT_RATE_LIMIT="0")
    guard = Guard(server, USER, PASSWORD)
    marker = uuid.uuid4().hex[:8]
    sock = _stuck_client(server.port, f"never reading {marker} [standin:tokens={HUGE}]")
    try:
        wait_until(lambda: _request(server, marker))  # its generation holds the only slot
        # Another user queues for that slot. The write deadline cuts the stuck
        # reader off, which ends its generation and frees the slot.
        other = logged_in(server.port, *OTHER)
        other.sock.settimeout(90)  # a hang guard: it waits for the slot
        replies: list[Any] = []
        waiter = threading.Thread(target=lambda: replies.append(other.chat("my turn?")))
        waiter.start()
        peak = 0
        while waiter.is_alive():
            # Before the fix the server read the model's output on into memory
            # (~10 MB a second with this model) until the client was cut off.
            peak = max(peak, rss(server))
            waiter.join(0.25)
        other.close()
        [reply] = replies
        assert reply.text.startswith("Echo: my turn?"), reply.events
        assert peak - guard.baseline <= RSS_BOUND, (
            f"RSS grew by {(peak - guard.baseline) / 2**20:.1f} MiB for one stuck reader")
    finally:
        sock.close()
    rec = wait_until(lambda: (r := _request(server, marker)) and r["finished"] and r)
    assert rec["aborted_by_client"] is True and rec["tokens_sent"] < HUGE
    [turn] = wait_until(lambda: [t for t in server.history(USER) if marker in t["user"]])
    assert turn["status"] == "interrupted"
    assert turn["answer"].startswith(f"Echo: never reading {marker}")
    # The server reports the most that waited for the client: the bound.
    [line] = [ln for ln in guard.new_log().splitlines() if "turn finished: interrupted" in ln]
    buffered = int(line.split("buffered_peak=")[1].split()[0])
    assert 0 < buffered <= ANSWER_BUFFER_LIMIT + 64
    guard.settle()
    guard.check()


class SlowReader:
    """Reads about ``rate`` bytes a second until told to hurry, then reads on to
    ``until`` (or the close)."""

    def __init__(self, sock: socket.socket, rate: int, until: bytes) -> None:
        self.sock, self.rate, self.until = sock, rate, until
        self.data = b""
        self.hurry = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(1.0)
        while self.until not in self.data:
            try:
                chunk = self.sock.recv(65536 if self.hurry.is_set() else max(1, self.rate // 10))
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk
            if not self.hurry.is_set():
                time.sleep(0.1)

    def finish(self, timeout: float) -> bytes:
        self.hurry.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no {self.until!r}; got {len(self.data)} bytes"
        return self.data


@pytest.mark.slow
def test_slow_reader_cannot_hold_the_model_slot_past_the_pause_budget(server_factory) -> None:
    server = server_factory(users={USER: PASSWORD, OTHER[0]: OTHER[1]},
                            CHAT_MAX_PARALLEL="1", CHAT_RATE_LIMIT="0")
    guard = Guard(server, USER, PASSWORD)
    marker = uuid.uuid4().hex[:8]
    sock = _stuck_client(server.port, f"reading slowly {marker} [standin:tokens={HUGE}]")
    try:
        # The reader keeps reading (so no write waits out the write deadline) but
        # far more slowly than the model writes: its generation is paused, then
        # stopped once the pause budget is spent, and the slot goes to the other
        # user, who queued for it meanwhile.
        reader = SlowReader(sock, 8 * 1024, b'"reason":"cancelled"')
        wait_until(lambda: _request(server, marker))
        other = logged_in(server.port, *OTHER)
        other.sock.settimeout(90)  # a hang guard: it waits for the slot
        reply = other.chat("waiting for the slot")
        other.close()
        assert reply.text.startswith("Echo: waiting for the slot"), reply.events
        data = reader.finish(timeout=60)
    finally:
        sock.close()
    frames = parse_v2(data[:data.rindex(b"}") + 1])
    notices = [b for kind, b in frames if kind == "NOTICE"]
    assert any("more slowly than the model" in n["message"] for n in notices), notices
    [end] = [b for kind, b in frames if kind == "END"]
    assert end["reason"] == "cancelled"
    rec = _request(server, marker)
    assert rec is not None and rec["aborted_by_client"] and rec["tokens_sent"] < HUGE
    [turn] = wait_until(lambda: [t for t in server.history(USER) if marker in t["user"]])
    assert turn["status"] == "interrupted"
    sent = "".join(b["text"] for kind, b in frames if kind == "DELTA")
    assert turn["answer"] == sent  # stored exactly what the client received
    assert "the client reads too slowly" in guard.new_log()
    guard.settle()
    guard.check()
