"""
The readiness endpoint (CHAT_HEALTH_PORT) a load balancer checks: a live
server, real HTTP. Ready only while the server takes new connections and its
model is ready; 503 "draining" from SIGTERM until it exits, while the answers
in flight finish.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import urllib.error
import urllib.request

import pytest
from chatcore.protocol import AnswerDelta, AnswerEnd, Error, ErrorCode

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import logged_in, wait_until

_HEALTH = re.compile(r"health endpoint on \S+:(\d+)")


def health_port(server) -> int:
    return int(server.wait_for_log(_HEALTH).group(1))


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out


@pytest.fixture
def server(server_factory):
    return server_factory(CHAT_HEALTH_PORT="0", CHAT_SHUTDOWN_GRACE="20")


def test_ready_and_live_when_serving(server):
    port = health_port(server)
    assert get(port, "/ready") == (200, "ready\n")
    assert get(port, "/live") == (200, "live\n")
    assert get(port, "/ready?from=haproxy") == (200, "ready\n")
    assert get(port, "/ready", "HEAD")[0] == 200


def test_not_ready_until_the_model_is(server_factory, standin_factory):
    # A stand-in without the model: the server pulls it (slowly) first.
    slow = standin_factory(models="", pull_seconds=3)
    server = server_factory(CHAT_HEALTH_PORT="0", standin_url=slow.url, wait_ready=False)
    port = health_port(server)
    status, body = get(port, "/ready")
    assert (status, body) == (503, "model not ready\n")
    assert get(port, "/live") == (200, "live\n")  # alive all the same
    server.wait_for_log("model ready")
    assert get(port, "/ready") == (200, "ready\n")


def test_draining_from_sigterm_while_answers_finish(server):
    port = health_port(server)
    client = logged_in(server.port, USER, PASSWORD)
    mid = client.start_chat("a long one [standin:tokens=80] [standin:delay-ms=40]")
    first = client.next_event()  # the answer has started
    assert isinstance(first, AnswerDelta)
    codes: list[int | None] = []
    stopper = threading.Thread(target=lambda: codes.append(server.stop(signal.SIGTERM, timeout=60)))
    stopper.start()
    wait_until(lambda: get(port, "/ready")[0] == 503)
    assert get(port, "/ready") == (503, "draining\n")
    assert get(port, "/live") == (200, "live\n")  # draining is not dead: don't restart it
    # No new connections meanwhile: the chat port is closed.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    reply = client.collect(mid)
    assert isinstance(reply.end, AnswerEnd) and reply.end.reason == "stop"
    stopper.join(60)
    assert codes == [0]
    turns = server.history(USER)
    assert [t["status"] for t in turns] == ["complete"]
    assert turns[0]["answer"] == first.text + reply.text
    # Gone with the process.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_drain_delay_keeps_serving_while_not_ready_then_closes_idle_sessions_first(
        server_factory):
    server = server_factory(CHAT_HEALTH_PORT="0", CHAT_SHUTDOWN_GRACE="20",
                            CHAT_DRAIN_DELAY="3", users={USER: PASSWORD, "late": "late password"})
    port = health_port(server)
    busy = logged_in(server.port, USER, PASSWORD)
    idle = logged_in(server.port, USER, PASSWORD)
    mid = busy.start_chat("a long one [standin:tokens=120] [standin:delay-ms=50]")
    assert isinstance(busy.next_event(), AnswerDelta)
    codes: list[int | None] = []
    stopper = threading.Thread(target=lambda: codes.append(server.stop(signal.SIGTERM, timeout=60)))
    stopper.start()
    wait_until(lambda: get(port, "/ready")[0] == 503)
    assert get(port, "/ready") == (503, "draining\n")
    # The delay: a balancer stops sending connections; whoever comes is served.
    late = logged_in(server.port, "late", "late password")
    late_mid = late.start_chat("just in time")
    # Then the idle sessions are told to reconnect at once, not after the answers.
    event = idle.next_event(timeout=10)
    assert isinstance(event, Error) and event.code is ErrorCode.SHUTTING_DOWN, event
    assert stopper.is_alive()  # the long answer is still running
    assert isinstance(late.collect(late_mid).end, AnswerEnd)  # ... and so was this one
    reply = busy.collect(mid)
    assert isinstance(reply.end, AnswerEnd) and reply.end.reason == "stop"
    stopper.join(60)
    assert codes == [0]
    assert [t["status"] for t in server.history(USER)] == ["complete"]
    assert [t["status"] for t in server.history("late")] == ["complete"]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    (b"POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"GET /ready HTTP/1.0\r\n\r\n", b"200"),
])
def test_other_requests_get_clear_statuses(server, request_bytes, status):
    reply = raw_request(health_port(server), request_bytes)
    assert reply.split(b" ", 2)[1] == status, reply


@pytest.mark.parametrize("junk", [b"\x16\x03\x01\x00\x05hello", b"GET /" + b"a" * 20000 + b"\r\n",
                                  b"\r\n\r\n\r\n", b"HELLO 0\r\n"])
def test_junk_is_closed_without_harm(server, junk):
    port = health_port(server)
    reply = raw_request(port, junk)
    assert not reply.startswith(b"HTTP/1.1 200"), reply
    assert get(port, "/ready") == (200, "ready\n")


def test_a_silent_probe_is_closed_and_others_are_answered(server):
    port = health_port(server)
    silent = socket.create_connection(("127.0.0.1", port), timeout=15)
    assert get(port, "/ready") == (200, "ready\n")
    silent.settimeout(15)  # a hang guard: the endpoint gives a request 2 s
    assert silent.recv(100) == b""
    silent.close()
