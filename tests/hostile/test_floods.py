"""
Floods of cheap frames from one client (docs/SECURITY.md §10).

A read of 64 KiB can hold some 800 PING frames, and reading from a stream
that already has data buffered does not suspend: a server that decodes and
answers a whole read in one step makes every other session wait for it (the
outside check measured other sessions' PING round trips of 240 ms p99 while
one client flooded PINGs). The wire now lets other tasks run every
``FAIR_BATCH`` events.

What is asserted is an order, not a time: with one client's burst in the
server's socket buffer and another client's PING waiting beside it (both sent
while the server is stopped), the other client's PONG comes back before most
of the burst is answered.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time

import pytest
from chat_server.wire import FAIR_BATCH

from tests.fixtures.server import PASSWORD, USER

from ._support import Guard, parse_v2, v2_frame, v2_login

pytestmark = pytest.mark.hostile

BURST = 4000


def _pongs(data: bytes, nonce: str) -> int:
    return sum(1 for kind, body in parse_v2(data) if kind == "PONG" and body.get("nonce") == nonce)


def test_ping_flood_attack_does_not_hold_other_sessions(guard: Guard) -> None:
    flooder = v2_login(guard.server.port, USER, PASSWORD)
    other = v2_login(guard.server.port, USER, PASSWORD)
    assert guard.server.proc is not None
    pid = guard.server.proc.pid
    # The burst and the other client's PING must both wait in the server's
    # socket buffers before it reads either, or the order measures how fast
    # the second sendall follows the first (CI once saw 199 PONGs of the burst
    # go out before the other PING had even arrived). So the server is stopped
    # while they are sent: the burst fills its buffer (the rest waits in a
    # thread's sendall), the PING lands behind it, then the server goes on.
    os.kill(pid, signal.SIGSTOP)
    try:
        sender = threading.Thread(target=flooder.sendall,
                                  args=(v2_frame("PING", {"nonce": "f"}) * BURST,))
        sender.start()
        time.sleep(0.5)  # the kernel moves what fits into the buffers meanwhile
        other.sendall(v2_frame("PING", {"nonce": "o"}))
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        # One thread reads both sockets as their bytes arrive: how many of the
        # flood's PONGs came back before the other session's one?
        sel = selectors.DefaultSelector()
        sel.register(flooder, selectors.EVENT_READ, "f")
        sel.register(other, selectors.EVENT_READ, "o")
        got = {"f": b"", "o": b""}
        flood_before_other = None
        while flood_before_other is None or _pongs(got["f"], "f") < BURST:
            events = sel.select(timeout=30)
            assert events, "the server stopped answering"
            for key, _ in events:
                chunk = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                assert chunk, "the server closed a connection"
                got[key.data] += chunk
            if flood_before_other is None and _pongs(got["o"], "o"):
                flood_before_other = _pongs(got["f"], "f")
        sel.close()
        sender.join(30)
    finally:
        flooder.close()
        other.close()
    # Before the fix: a whole read (~800 PINGs) was answered first. Now the
    # other session waits for a few batches at most.
    assert flood_before_other is not None and flood_before_other < 10 * FAIR_BATCH, flood_before_other
    guard.check()
