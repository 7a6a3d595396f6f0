"""
chat_server.wire
~~~~~~~~~~~~~~~~

The I/O adapter between an asyncio stream pair and the sans-IO codec: it reads
bytes into :class:`chatcore.protocol.Connection` until an event comes out, and
writes what the codec produces, one ``write()`` per event so a v1 client's
``recv(64)`` never sees two things interleaved.

Every read and write has a deadline: a peer that stops reading (slow consumer)
or dribbles a frame one byte at a time (slowloris) is cut off, not waited for.
"""

from __future__ import annotations

import asyncio
import time

from chatcore.protocol import NEED_DATA, Connection, Event

#: Bytes asked of the socket per read (h11's examples use the same).
MAX_RECV = 64 * 1024
#: A frame, once started, must be complete within this many seconds, however
#: slowly its bytes trickle in (nginx's client_header_timeout semantics).
FRAME_DEADLINE = 30.0
#: A write that cannot be flushed within this many seconds means the peer stopped
#: reading; NATS uses a 10 s flush deadline for the same reason.
WRITE_DEADLINE = 15.0
#: Bytes that may sit in our send buffer before a write waits for the peer.
WRITE_BUFFER_LOW = 64 * 1024


class PeerGone(Exception):
    """The peer closed, reset, or stopped reading; nothing more can be sent."""


class FrameTimeout(Exception):
    """A frame started but did not complete within :data:`FRAME_DEADLINE`."""


class Wire:
    # One per connection: no instance dict (docs/BENCHMARKS.md, idle connections).
    __slots__ = (
        "_frame_started", "closed", "conn", "frame_deadline", "last_traffic", "reader",
        "write_deadline", "writer",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: Connection,
        *,
        frame_deadline: float = FRAME_DEADLINE,
        write_deadline: float = WRITE_DEADLINE,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.frame_deadline = frame_deadline
        self.write_deadline = write_deadline
        self._frame_started: float | None = None
        self.closed = False
        #: When a byte last went either way (monotonic): the keepalive clock.
        self.last_traffic = time.monotonic()

    async def next_event(self, idle_timeout: float | None) -> Event:
        """The next event from the peer.

        ``idle_timeout`` bounds the wait for the *first* byte of a frame;
        once a frame has started, :data:`FRAME_DEADLINE` bounds the rest.
        Raises ``TimeoutError`` (idle), :exc:`FrameTimeout`,
        :exc:`PeerGone` or the codec's ``RemoteProtocolError``.
        """
        while True:
            if self.closed:
                raise PeerGone("connection closed")
            event = self.conn.next_event()
            if out := self.conn.data_to_send():
                await self.write(out)
            if event is not NEED_DATA:
                self._frame_started = None
                return event  # type: ignore[return-value]
            if self._frame_started is None:
                timeout = idle_timeout
            else:
                timeout = self.frame_deadline - (time.monotonic() - self._frame_started)
                if timeout <= 0:
                    raise FrameTimeout("frame not completed in time")
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(MAX_RECV)
            except TimeoutError:
                if self._frame_started is not None:
                    raise FrameTimeout("frame not completed in time") from None
                raise
            except (ConnectionError, OSError):
                data = b""
            if data:
                self.last_traffic = time.monotonic()
                if self._frame_started is None:
                    self._frame_started = self.last_traffic
            self.conn.receive_data(data)

    async def send(self, event: Event) -> None:
        """Encode ``event`` and write it (nothing is written for b"")."""
        data = self.conn.send(event)
        if data:
            await self.write(data)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise PeerGone("connection already closed")
        try:
            # write() is synchronous, so bytes from concurrent senders never
            # interleave; only the drain below yields.
            self.writer.write(data)
            self.last_traffic = time.monotonic()
            transport = self.writer.transport
            if transport.get_write_buffer_size() <= WRITE_BUFFER_LOW:
                # The kernel took it all (the usual case): skip the drain and
                # its timeout, which cost more than the write for one token.
                return
            async with asyncio.timeout(self.write_deadline):
                await self.writer.drain()
        except TimeoutError:
            self.abort()
            raise PeerGone("peer stopped reading") from None
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.abort()
            raise PeerGone(str(exc) or type(exc).__name__) from None

    def abort(self) -> None:
        self.closed = True
        transport = self.writer.transport
        # Also when already closing: a TLS transport is "closing" while it waits
        # for the peer's close_notify, and a silent peer would keep it open.
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            self.abort()
