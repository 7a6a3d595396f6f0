"""
chat_server.wire's read budget before login, over real sockets (an asyncio
server on 127.0.0.1 in this process): a peer that sends a frame one byte per
``send()`` is read a few bytes at a time, then the wire stops reading it for
``PRE_LOGIN_READ_PAUSE`` and takes what came meanwhile in one read, so such a
connection costs the event loop a handful of reads a second, not one per byte
(docs/SECURITY.md §10). The frame still arrives whole; a logged-in session is
not held to it.
"""

from __future__ import annotations

import asyncio
import json

from chat_server.wire import PRE_LOGIN_READ_PAUSE, PRE_LOGIN_READS, Wire
from chatcore.protocol import ClientHello, Connection, Role


class CountingReader(asyncio.StreamReader):
    """The stream reader asyncio would use, counting the wire's reads."""

    reads = 0

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        if data:
            self.reads += 1
        return data


def hello_frame() -> bytes:
    body = json.dumps({"versions": [2], "agent": "dribbler/1"}).encode()
    return f"HELLO {len(body)}".encode().ljust(64) + body


async def dribbled_hello(gap: float) -> tuple[object, int, int]:
    """(the event read, reads taken, bytes sent) for a HELLO sent a byte at a time."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[tuple[object, int]] = loop.create_future()

    def protocol() -> asyncio.StreamReaderProtocol:
        reader = CountingReader(loop=loop)

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            wire = Wire(reader, w, Connection(Role.SERVER))
            event = await wire.next_event(idle_timeout=30)
            result.set_result((event, reader.reads))
            await wire.close()

        return asyncio.StreamReaderProtocol(reader, serve, loop=loop)

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = hello_frame()
    for byte in frame:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(gap)
    event, reads = await asyncio.wait_for(result, 30)
    writer.close()
    server.close()
    await server.wait_closed()
    return event, reads, len(frame)


def test_a_frame_sent_a_byte_at_a_time_before_login_is_read_in_few_reads() -> None:
    # ~100 bytes, one every 2 ms: ~0.2 s, so the wire pauses at least once.
    event, reads, sent = asyncio.run(dribbled_hello(gap=0.002))
    assert isinstance(event, ClientHello) and event.agent == "dribbler/1"
    assert sent >= 90
    # Each pause lets ~PRE_LOGIN_READ_PAUSE of bytes pile up for one read: the
    # budget per pause plus that read, for each pause the dribble lasts.
    pauses = int(sent * 0.002 / PRE_LOGIN_READ_PAUSE) + 2
    assert reads <= (PRE_LOGIN_READS + 1) * pauses, (reads, sent)
    assert reads < sent // 2, (reads, sent)
