"""
chat_server.wire
~~~~~~~~~~~~~~~~

The I/O adapter between an asyncio stream pair and the sans-IO codec: it reads
bytes into :class:`chatcore.protocol.Connection` until an event comes out, and
writes what the codec produces, one ``write()`` per event so a v1 client's
``recv(64)`` never sees two things interleaved.

Every read and write has a deadline: a peer that stops reading (slow consumer)
or dribbles a frame one byte at a time (slowloris) is cut off, not waited for.

A wire's read deadline is one timer for the life of the connection rather than
an ``asyncio.timeout`` per read (its ``Timeout``, handle and context are ~440
bytes, on every idle connection all the time): the timer is moved only when the
deadline comes *earlier*; when it fires before the deadline it re-arms itself
for it, and when it fires at the deadline it cancels the read, which
:meth:`Wire.next_event` turns into ``TimeoutError`` (as ``asyncio.timeout`` does).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

from chatcore.protocol import NEED_DATA, Connection, Event, State

#: Bytes asked of the socket per read (h11's examples use the same).
MAX_RECV = 64 * 1024
#: A wire lets the other tasks run after this many events. A read of 64 KiB
#: may hold thousands of small frames (a flood of PINGs), and reading from a
#: stream that has data buffered does not suspend: without this, one client's
#: burst would be decoded and answered in one step of the event loop while
#: every other session waits (docs/SECURITY.md §10).
FAIR_BATCH = 16
#: Before login, a connection may take this many reads without an event
#: coming out of them (a frame split over TCP segments takes a few) ...
PRE_LOGIN_READS = 4
#: ... after which reading it pauses for this long (the transport stops
#: reading: the kernel collects what the peer sends, and the next read takes
#: it all at once). A peer that sends a frame one byte per ``send()`` would
#: otherwise cost the event loop a wake-up, a read and a parse per byte, for
#: every such connection, and the logged-in sessions wait behind them
#: (docs/SECURITY.md §10). A client that sends whole frames never meets it.
PRE_LOGIN_READ_PAUSE = 0.1
#: A frame, once started, must be complete within this many seconds, however
#: slowly its bytes trickle in (nginx's client_header_timeout semantics).
FRAME_DEADLINE = 30.0
#: A write that cannot be flushed within this many seconds means the peer stopped
#: reading; NATS uses a 10 s flush deadline for the same reason.
WRITE_DEADLINE = 15.0
#: Bytes that may sit in our send buffer before a write waits for the peer.
WRITE_BUFFER_LOW = 64 * 1024
#: A lingering close (:meth:`Wire.close_lingering`) reads and drops what the
#: peer still sends for at most this long, and at most this many bytes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


_PRE_LOGIN = frozenset({State.HANDSHAKE, State.NEGOTIATING, State.AUTHENTICATING, State.VERIFYING})


class PeerGone(Exception):
    """The peer closed, reset, or stopped reading; nothing more can be sent."""


class Ended(Exception):
    """Another task ended the connection (:meth:`Wire.end`): its last frame is
    sent; the reading task stops reading and closes it (lingering)."""


class FrameTimeout(Exception):
    """A frame started but did not complete within :data:`FRAME_DEADLINE`."""


class _TimerContext(threading.local):
    """One context per thread for the wires' timers: they need none of their
    own, and asyncio would copy one (64 bytes) for every timer."""

    def __init__(self) -> None:
        self.context = contextvars.Context()


_timer_context = _TimerContext()


class Wire:
    # One per connection: no instance dict (docs/BENCHMARKS.md, idle connections).
    __slots__ = (
        "_burst",
        "_deadline",
        "_expired",
        "_frame_started",
        "_reader_task",
        "_reads",
        "_timer",
        "closed",
        "conn",
        "ended",
        "frame_deadline",
        "last_traffic",
        "reader",
        "write_deadline",
        "writer",
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
        #: Events returned since this wire last let the other tasks run.
        self._burst = 0
        #: Reads since the last event (before login: :data:`PRE_LOGIN_READS`).
        self._reads = 0
        #: While a read waits: when it times out (loop time), and its task.
        self._deadline: float | None = None
        self._reader_task: asyncio.Task[object] | None = None
        #: The read timer (it may be set for an earlier deadline than the current one).
        self._timer: asyncio.TimerHandle | None = None
        #: This wire cancelled the read (its timer, or :meth:`end`).
        self._expired = False
        self.closed = False
        #: Another task ended the connection (:meth:`end`): nothing more is
        #: read or written; the reading task closes it.
        self.ended = False
        #: When a byte last went either way (monotonic): the keepalive clock.
        self.last_traffic = time.monotonic()

    async def next_event(self, idle_timeout: float | None) -> Event:
        """The next event from the peer.

        ``idle_timeout`` bounds the wait for the *first* byte of a frame;
        once a frame has started, :data:`FRAME_DEADLINE` bounds the rest.
        Raises ``TimeoutError`` (idle), :exc:`FrameTimeout`,
        :exc:`PeerGone`, :exc:`Ended` or the codec's ``RemoteProtocolError``.
        """
        while True:
            if self.closed:
                raise PeerGone("connection closed")
            if self.ended:
                raise Ended("ended by the server")
            event = self.conn.next_event()
            if out := self.conn.data_to_send():
                await self.write(out)
            if event is not NEED_DATA:
                self._frame_started = None
                self._reads = 0
                self._burst += 1
                if self._burst >= FAIR_BATCH:
                    self._burst = 0
                    await asyncio.sleep(0)
                return event  # type: ignore[return-value]
            if self._frame_started is None:
                timeout = idle_timeout
            else:
                timeout = self.frame_deadline - (time.monotonic() - self._frame_started)
                if timeout <= 0:
                    raise FrameTimeout("frame not completed in time")
            task = asyncio.current_task()
            cancelling = 0 if task is None else task.cancelling()
            self._reader_task = task
            if timeout is not None and task is not None:
                self._arm(timeout, task)
            try:
                data = await self.reader.read(MAX_RECV)
            except asyncio.CancelledError:
                if not self._expired:
                    raise
                self._expired = False
                assert task is not None
                if task.uncancel() > cancelling:
                    raise  # cancelled by someone else too
                if self.ended:
                    raise Ended("ended by the server") from None
                if self._frame_started is not None:
                    raise FrameTimeout("frame not completed in time") from None
                raise TimeoutError from None
            except (ConnectionError, OSError):
                data = b""
            finally:
                self._deadline = self._reader_task = None
            if data:
                self.last_traffic = time.monotonic()
                if self._frame_started is None:
                    self._frame_started = self.last_traffic
                self._reads += 1
                if self._reads > PRE_LOGIN_READS and self.conn.state in _PRE_LOGIN:
                    self._reads = 0
                    await self._pause_reading(PRE_LOGIN_READ_PAUSE)
            self.conn.receive_data(data)

    async def _pause_reading(self, seconds: float) -> None:
        """Stop reading the socket for ``seconds`` (what comes meanwhile waits
        in the kernel). The frame deadline still counts."""
        transport = self.writer.transport
        transport.pause_reading()  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(seconds)
        finally:
            if not transport.is_closing():
                transport.resume_reading()  # type: ignore[attr-defined]

    def _arm(self, timeout: float, task: asyncio.Task[object]) -> None:
        """The read about to start times out after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._deadline = deadline
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first and re-arms itself for the deadline
            timer.cancel()
        self._timer = loop.call_at(deadline, Wire._expire, self, context=_timer_context.context)

    @staticmethod
    def _expire(wire: Wire) -> None:
        """The read timer of ``wire`` fired. (A plain function of the class: the
        timer holds the wire as its argument, not a bound method made per timer.)"""
        timer, wire._timer = wire._timer, None
        deadline, task = wire._deadline, wire._reader_task
        if deadline is None or task is None or timer is None:
            return  # not reading now: the next read arms a new timer
        if deadline > timer.when():  # the deadline moved on since the timer was set
            wire._timer = asyncio.get_running_loop().call_at(
                deadline, Wire._expire, wire, context=_timer_context.context)
            return
        wire._expired = True
        task.cancel()

    def end(self) -> None:
        """Another task has sent this connection's last frame (a fatal ERROR:
        the session was revoked, the server is stopping, v1 moderation): the
        task reading the wire stops (its read now, or its next one, raises
        :exc:`Ended`) and closes the connection with :meth:`close_lingering`,
        the one reader of the stream. Nothing more is written."""
        if self.ended or self.closed:
            return
        self.ended = True
        task = self._reader_task
        if (task is not None and not self._expired and not task.done()
                and task is not asyncio.current_task()):
            self._expired = True
            task.cancel()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def send(self, event: Event) -> None:
        """Encode ``event`` and write it (nothing is written for b"")."""
        data = self.conn.send(event)
        if data:
            await self.write(data)

    async def write(self, data: bytes) -> None:
        if self.closed or self.ended:
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
        self._disarm()
        transport = self.writer.transport
        # Also when already closing: a TLS transport is "closing" while it waits
        # for the peer's close_notify, and a silent peer would keep it open.
        if transport is not None:
            transport.abort()

    async def close_lingering(self) -> None:
        """Close after our last words (a BYE, a fatal ERROR), without losing them.

        Closing a socket whose peer's bytes are still unread sends a reset
        (RFC 1122 §4.2.2.13), and a reset can make the peer's kernel drop
        what it had received but not yet handed to the client: a client that
        was still sending (a frame body behind a refused header, frames that
        crossed our BYE) would never read why it was cut off. So, as web
        servers do: half-close (FIN after our last frame), read and drop what
        still comes until the peer's EOF (bounded in time and bytes), then
        close. Over TLS there is no half-close: a plain close.
        """
        if self.closed:
            return
        if self.writer.can_write_eof() and not self.reader.at_eof():
            try:
                async with asyncio.timeout(LINGER_SECONDS):
                    await self.writer.drain()
                    self.writer.write_eof()
                    left = LINGER_BYTES
                    while left > 0:
                        data = await self.reader.read(min(left, MAX_RECV))
                        if not data:
                            break
                        left -= len(data)
            except (TimeoutError, ConnectionError, OSError, RuntimeError):
                pass
        await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        try:
            self.writer.close()
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            self.abort()
