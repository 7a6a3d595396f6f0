"""
What every connection costs: a whole idle logged-in session in a real server,
and its parts.

The whole: the real server (tests/memory/traced_server.py: the console entry
point with tracemalloc on) holds a few hundred idle logged-in v2 sessions; the
bytes it allocated for them, divided by their number, must stay under
:data:`SESSION_BUDGET`. Everything a session keeps counts: its task and
coroutine frames, the stream objects, the codec, the read deadline's timer.

The parts: what every connection costs before it does anything: the server's stream
protocol (chat_server/gate.py) is created for each accepted socket and lives as
long as the connection, so at 10,000 idle connections each byte of it counts
10,000 times (docs/BENCHMARKS.md, "idle"). asyncio's own protocol keeps the
writers waiting in ``drain()`` in a ``collections.deque``, whose empty block is
about 760 bytes; the server's protocol keeps them in a list, and writers must
still all be woken when the peer reads again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import tracemalloc
from pathlib import Path

from chat_server import gate
from chatcore.protocol import Ping, Pong

from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.server.clients import V2Client, logged_in, wait_until

#: Bytes of Python allocations the server may keep per idle logged-in v2
#: session. docs/BENCHMARKS.md ("idle") turns this into RSS: an idle
#: connection's RSS is these bytes plus about 0.7 KiB of allocator overhead,
#: and the target there is 8 KiB. With an ``asyncio.timeout`` per read,
#: asyncio's done-callback closure on every connection task, a future kept
#: from the gate and instance dicts on the per-connection classes it was
#: about 7,870; without them (and without a default conversation id and a list of
#: tokens made for every login) about 6,850.
SESSION_BUDGET = 7 * 1024
#: Idle sessions measured (after a warm-up of WARM).
SESSIONS = 300
WARM = 20

#: Bytes the protocol may allocate per connection (reader, protocol, futures).
#: With asyncio's empty deque it is about 1,500; without it about 750.
PROTOCOL_BUDGET = 1100


def _traced_bytes(server: LiveServer, out: Path) -> int:
    """What the traced server's tracemalloc counts now (after a gc)."""
    out.unlink(missing_ok=True)
    os.kill(server.pid, signal.SIGUSR1)
    wait_until(out.exists, timeout=30)
    return int(out.read_text())


def test_an_idle_logged_in_session_costs_the_server_under_its_budget(server_factory, tmp_path) -> None:
    out = tmp_path / "traced-bytes"
    server = server_factory(command=("-m", "tests.memory.traced_server"),
                            TRACED_BYTES_FILE=str(out),
                            CHAT_MAX_CONNECTIONS_PER_ADDRESS=str(2 * (WARM + SESSIONS)),
                            CHAT_CONNECT_RATE_PER_ADDRESS="0")
    clients: list[V2Client] = [logged_in(server.port, USER, PASSWORD) for _ in range(WARM)]
    time.sleep(0.5)  # the last login's work has ended
    before = _traced_bytes(server, out)
    clients += [logged_in(server.port, USER, PASSWORD) for _ in range(SESSIONS)]
    time.sleep(0.5)
    after = _traced_bytes(server, out)
    try:
        per_session = (after - before) / SESSIONS
        assert per_session < SESSION_BUDGET, f"{per_session:.0f} bytes per idle session"
        # They are all still there, idle and logged in (a ping answered).
        probe = clients[-1]
        probe.send(Ping("cafe"))
        assert probe.next_event(timeout=10) == Pong("cafe")
    finally:
        for client in clients:
            client.close()


async def _noop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def test_a_connections_stream_protocol_holds_no_empty_deque_block() -> None:
    async def measure() -> float:
        loop = asyncio.get_running_loop()
        make = gate.protocol_factory(_noop, loop)
        make()  # warm: first-use caches
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [make() for _ in range(500)]
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(kept) == 500
        return (after - before) / 500

    per_protocol = asyncio.run(measure())
    assert per_protocol < PROTOCOL_BUDGET, f"{per_protocol:.0f} bytes per connection"


def test_writers_waiting_in_drain_all_resume_when_the_peer_reads_again() -> None:
    """Several tasks wait in ``drain()`` on one connection whose peer stopped
    reading; when it reads again every one of them is woken and every byte
    arrives (what the waiters' list must do, as asyncio's deque did)."""
    chunk = b"x" * (1 << 20)
    writers = 4

    async def scenario() -> tuple[int, int]:
        drained = 0
        all_written = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal drained
            # Small buffers, so the writes back up at once.
            writer.transport.set_write_buffer_limits(high=16 * 1024)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)

            async def one() -> None:
                nonlocal drained
                writer.write(chunk)
                await writer.drain()
                drained += 1

            await asyncio.gather(*(one() for _ in range(writers)))
            all_written.set()
            writer.close()

        server = await gate.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            # A small receive buffer, so the client's kernel soaks up little.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, client = await asyncio.open_connection(sock=sock)
            await asyncio.sleep(0.3)  # the peer does not read: the writers wait
            assert drained == 0
            received = 0
            while chunk_ := await reader.read(1 << 16):
                received += len(chunk_)
            await asyncio.wait_for(all_written.wait(), 30)
            client.close()
            return drained, received
        finally:
            server.close()
            await server.wait_closed()

    drained, received = asyncio.run(scenario())
    assert drained == writers
    assert received == writers * len(chunk)
