"""
Slowloris: frames dribbled one byte per second.

Before login the login deadline (CHAT_AUTH_TIMEOUT, 3 s on the shared server)
cuts the sender off. After login the per-frame deadline does (CHAT_FRAME_TIMEOUT,
30 s by default, 6 s on the shared server; nginx ``client_header_timeout``
semantics: a deadline for the whole frame, not between bytes). The second test
dribbles over v1 and v2 at once and checks that a well-behaved client is served
meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.fixtures.server import PASSWORD, USER

from ._support import (
    HEADER,
    V1_GOODBYE,
    V1_INVALID_USERNAME,
    Guard,
    raw,
    v1_chunks,
    v1_error_text,
    v1_login,
    v2_error_codes,
    v2_frame,
    v2_login,
)
from .conftest import AUTH_TIMEOUT, FRAME_TIMEOUT

pytestmark = pytest.mark.hostile

#: The shared server's frame deadline; the guard is generous (a busy 2-core machine).
FRAME_DEADLINE = float(FRAME_TIMEOUT)
GUARD = 20.0


def dribble(sock: socket.socket, data: bytes, limit: float) -> tuple[bytes, float]:
    """Send ``data`` one byte per second until the server answers or closes.
    Returns what it sent back and the seconds it took (fails after ``limit``)."""
    start = time.monotonic()
    reply = b""
    for b in data:
        try:
            sock.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sock.settimeout(1.0)  # the recv is also the one-second pause
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            assert time.monotonic() - start < limit, "still connected after the deadline"
            continue
        except ConnectionResetError:
            break
        reply += chunk
        if not chunk:
            break
        # Got the refusal: read on to the close.
        sock.settimeout(5.0)
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        break
    else:
        raise AssertionError("the whole frame went through one byte per second")
    return reply, time.monotonic() - start


def test_slowloris_before_login_is_cut_off_by_the_login_deadline(guard: Guard) -> None:
    sock = raw(guard.server.port)
    frame = str(len(USER)).encode().ljust(HEADER) + USER.encode()
    reply, took = dribble(sock, frame * 4, limit=AUTH_TIMEOUT + GUARD)
    sock.close()
    assert reply == V1_INVALID_USERNAME  # v1 before login: the original refusal
    assert took < AUTH_TIMEOUT + GUARD
    assert "authentication timed out" in guard.new_log()
    guard.check()


@pytest.mark.slow
def test_slowloris_after_login_is_cut_off_by_the_frame_deadline_v1_and_v2(guard: Guard) -> None:
    port = guard.server.port
    text = b"x" * 60  # 64 + 60 bytes: longer than the deadline at 1 byte/s
    frames = {
        "v1": (v1_login(port, USER, PASSWORD), str(len(text)).encode().ljust(HEADER) + text),
        "v2": (v2_login(port, USER, PASSWORD),
               v2_frame("CHAT", b'{"id":1,"text":"' + text + b'"}')),
    }
    results: dict[str, tuple[bytes, float]] = {}

    def run(name: str) -> None:
        sock, data = frames[name]
        results[name] = dribble(sock, data, limit=FRAME_DEADLINE + GUARD)
        sock.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in frames]
    for t in threads:
        t.start()
    # Meanwhile, a well-behaved client keeps being served.
    served = 0
    while any(t.is_alive() for t in threads):
        guard.served()
        served += 1
        time.sleep(2)
    for t in threads:
        t.join()
    assert served >= 2
    v1_reply, v1_took = results["v1"]
    assert v1_chunks(v1_reply)[-1].strip() == V1_GOODBYE, v1_reply
    assert v1_error_text(v1_reply).startswith("[ERROR] protocol_error: frame not completed")
    v2_reply, v2_took = results["v2"]
    assert v2_error_codes(v2_reply) == ["protocol_error"], v2_reply
    for took in (v1_took, v2_took):
        assert FRAME_DEADLINE - 2 < took < FRAME_DEADLINE + GUARD
    assert guard.new_log().count("frame not completed in time") >= 2
    guard.check()
