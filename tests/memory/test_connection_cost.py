"""
What every connection costs before it does anything: the server's stream
protocol (chat_server/gate.py) is created for each accepted socket and lives as
long as the connection, so at 10,000 idle connections each byte of it counts
10,000 times (docs/BENCHMARKS.md, "idle"). asyncio's own protocol keeps the
writers waiting in ``drain()`` in a ``collections.deque``, whose empty block is
about 760 bytes; the server's protocol keeps them in a list, and writers must
still all be woken when the peer reads again.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc

from chat_server import gate

#: Bytes the protocol may allocate per connection (reader, protocol, futures).
#: With asyncio's empty deque it is about 1,500; without it about 750.
PROTOCOL_BUDGET = 1100


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
