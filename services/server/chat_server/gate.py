"""
chat_server.gate
~~~~~~~~~~~~~~~~

What a new connection speaks, decided by its first byte before the protocol
starts (one port serves all three; docs/PROTOCOL.md §2 and §13):

========================  =============================================================
first byte                what happens
========================  =============================================================
``0x16``                  a TLS handshake record: the connection is upgraded to TLS in
                          place (:meth:`asyncio.StreamWriter.start_tls`); inside, v2 only
ASCII digit               v1 (plaintext). Refused when ``CHAT_ALLOW_V1=false``: the
                          original client's login refusal, then close
ASCII uppercase letter    plaintext v2. Refused when ``CHAT_REQUIRE_TLS=true``: a v2
                          ``ERROR tls_required``, then close
anything else             left to the codec (a protocol error, closed without a reply)
========================  =============================================================

Before that, a connection from a trusted load balancer (``CHAT_TRUSTED_PROXIES``)
must open with a PROXY protocol header naming the real client
(:func:`chat_server.peer.read_proxy_header`, within
:data:`~chat_server.peer.PROXY_HEADER_SECONDS`); it is taken off the socket
byte-exactly and the named address becomes the connection's
(:func:`chat_server.peer.client_address`). A trusted peer without a valid header
is dropped; anyone else who starts with a PROXY header is dropped as a protocol
error (docs/PROTOCOL.md §14).

The byte is *peeked* (``MSG_PEEK``), so neither the TLS layer nor the codec
misses a byte: the listener's protocol (:func:`start_server`) pauses reading
the moment a connection is made, before asyncio reads anything, and the gate
waits for the socket to become readable on a duplicate of its descriptor.

Every step is bounded: the first byte must come within ``CHAT_AUTH_TIMEOUT``,
the TLS handshake must finish within ``min(CHAT_AUTH_TIMEOUT,
CHAT_FRAME_TIMEOUT)``; a stalled or junk handshake ends that connection only.
The handshake runs on the event loop like any other read (an ECDSA P-256
handshake costs well under a millisecond; see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import socket
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from chatcore.protocol import Connection, Error, ErrorCode, RemoteProtocolError, Role

from . import metrics
from .config import Settings
from .metrics import RejectReason
from .peer import (
    PROXY_HEADER_SECONDS,
    NoProxyHeader,
    client_address,
    read_proxy_header,
    set_client_address,
)
from .proxy_protocol import ProxyProtocolError, looks_like_header

__all__ = ["TLS_REQUIRED_MESSAGE", "Gate", "Kind", "Opened", "Shed", "start_server"]

log = logging.getLogger("chat_server.gate")

#: The first byte of a TLS record of type handshake (RFC 8446 §5.1: ContentType 22).
TLS_HANDSHAKE = 0x16
#: After a refusal, how long the server keeps reading (and discarding) what the
#: client still sends, so that closing does not reset the connection before the
#: client has read the refusal (a lingering close, as web servers do).
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
TLS_REQUIRED_MESSAGE = "this server accepts v2 only over TLS; reconnect with TLS (chat-client --tls)"

#: asyncio gives every TLS connection a zero-filled read buffer of
#: ``SSLProtocol.max_size`` bytes (256 KiB in CPython 3.11-3.13), all of it
#: resident: 267 KiB per idle TLS session against 8.6 KiB for a plaintext one,
#: so 10,000 idle TLS sessions would hold 2.6 GB. A TLS record carries at most
#: 16 KiB (RFC 8446 §5.1); one record's worth reads a chat stream just as well
#: (measured: 38.6 KiB per idle TLS session; docs/BENCHMARKS.md).
SSL_READ_BUFFER = 16 * 1024
if getattr(sslproto.SSLProtocol, "max_size", 0) > SSL_READ_BUFFER:
    sslproto.SSLProtocol.max_size = SSL_READ_BUFFER


class Kind(enum.Enum):
    TLS = "tls"
    V1 = "v1"
    V2 = "v2"
    OTHER = "other"


@dataclass(frozen=True)
class Opened:
    """A connection that passed the gate."""

    kind: Kind

    @property
    def tls(self) -> bool:
        return self.kind is Kind.TLS


class _PausedAtStart(asyncio.StreamReaderProtocol):
    """A stream protocol that does not read until the gate has looked at the
    first byte.

    ``pause_reading()`` in ``connection_made`` is enough where asyncio checks
    the pause before it registers a new socket for reading (3.11.7, 3.12);
    older releases (Debian 12 ships 3.11.2) register it anyway. So the
    pause is made once more from the next loop step, which runs before any
    read can (callbacks run in order, and the first read needs a poll of the
    selector after the registration): resuming and pausing again removes the
    registration and cancels a read that the poll may have queued."""

    def __init__(self, reader: asyncio.StreamReader,
                 cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None],
                 loop: asyncio.AbstractEventLoop, shed: Shed | None = None) -> None:
        super().__init__(reader, cb, loop=loop)
        self._shed = shed
        #: The connection is lost.
        self.is_lost = False
        #: While the gate waits for readability: done when the connection is
        #: lost (made only then: a future is ~140 bytes on every connection).
        self.lost: asyncio.Future[None] | None = None
        # asyncio keeps the writers waiting in drain() in a deque: an empty
        # deque is a 64-slot block, about 760 bytes on every connection (a
        # tenth of an idle one), almost always for nothing. It is only
        # appended to, removed from and iterated (3.11-3.13): a list does the
        # same. Left alone if a later Python made it something else.
        waiters = getattr(self, "_drain_waiters", None)
        if type(waiters) is collections.deque and not waiters:
            self._drain_waiters: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._shed is not None and self._shed(_host(transport.get_extra_info("peername"))):
            # Dropped before it has a task or a byte is read (a reconnect storm).
            self.is_lost = True
            transport.abort()  # type: ignore[attr-defined]
            return
        transport.pause_reading()  # type: ignore[attr-defined]
        # Before super(): so this runs ahead of the gate's first step.
        asyncio.get_running_loop().call_soon(_hold, transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        super().connection_lost(exc)


def _host(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "?")


def _hold(transport: asyncio.BaseTransport) -> None:
    if not transport.is_closing():
        transport.resume_reading()  # type: ignore[attr-defined]
        transport.pause_reading()  # type: ignore[attr-defined]


#: Called with the TCP peer's host as each connection is accepted: ``True``
#: drops it there and then (no task, no read, no reply).
Shed = Callable[[str], bool]


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
    host: str, port: int, *, backlog: int = 100, shed: Shed | None = None,
) -> asyncio.Server:
    """:func:`asyncio.start_server`, with connections paused until the gate has
    peeked, and those ``shed`` says to drop dropped as they are accepted.

    ``client_connected_cb`` must catch its own errors and close the connection
    on them: its task gets no done-callback that would (asyncio's, a closure
    with its own context, costs ~250 bytes on every connection for as long as
    it lives)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(protocol_factory(client_connected_cb, loop, shed),
                                    host, port, backlog=backlog)


def protocol_factory(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
    loop: asyncio.AbstractEventLoop, shed: Shed | None = None,
) -> Callable[[], asyncio.StreamReaderProtocol]:
    """Makes the protocol of each accepted connection (paused until the gate has peeked).

    The connection's task is started here rather than by asyncio: given a
    coroutine, asyncio adds a done-callback closure to the task that lives as
    long as the connection; given the task, it adds nothing."""

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> asyncio.Task[None]:
        return loop.create_task(client_connected_cb(reader, writer))

    return lambda: _PausedAtStart(asyncio.StreamReader(loop=loop), connected, loop, shed)


class Gate:
    def __init__(self, settings: Settings, context: ssl.SSLContext | None) -> None:
        self.settings = settings
        self.context = context
        self.handshake_timeout = min(settings.auth_timeout, settings.frame_timeout)
        self._pending: set[asyncio.StreamWriter] = set()

    def abort_all(self) -> None:
        """Server shutdown: end every connection still at the gate."""
        for writer in list(self._pending):
            _abort(writer)

    async def open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   *, timeout: float | None = None) -> Opened | None:
        """Peek, upgrade or refuse. ``None``: the connection is closed (silence,
        EOF, a failed handshake, or a refusal that was sent)."""
        self._pending.add(writer)
        try:
            return await self._open(reader, writer, timeout or self.settings.auth_timeout)
        finally:
            self._pending.discard(writer)

    async def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    timeout: float) -> Opened | None:
        transport = writer.transport
        protocol = transport.get_protocol()
        if not isinstance(protocol, _PausedAtStart):
            # Not from our listener (asyncio already reads): nothing can be peeked.
            return Opened(Kind.OTHER)
        raw = _RawSocket.open(writer, protocol)
        if raw is None:
            _abort(writer)
            return None
        with raw:
            if not await self._proxy_header(raw, writer, timeout):
                _abort(writer)
                return None
            first = await raw.first_byte(timeout)
            peer = client_address(writer)
            # Nothing valid starts with "P" or CR: say what it was when it is a
            # PROXY header from someone not entitled to send one.
            if (first in (ord("P"), 0x0D) and not self._trusted(writer)
                    and looks_like_header(raw.peek(16) or b"")):
                metrics.connection_rejected(RejectReason.PROXY_UNTRUSTED)
                log.warning("PROXY protocol header from an address not in "
                            "CHAT_TRUSTED_PROXIES: protocol error",
                            extra={"event": "proxy_untrusted", "peer": peer})
                _abort(writer)
                return None
        if first is None:
            _abort(writer)
            return None
        if first == TLS_HANDSHAKE and self.context is not None:
            return await self._upgrade(writer, peer)
        transport.resume_reading()  # type: ignore[attr-defined]
        if 0x30 <= first <= 0x39:
            if not self.settings.allow_v1:
                metrics.connection_rejected(RejectReason.V1_DISABLED)
                log.info("v1 connection refused (CHAT_ALLOW_V1=false)",
                         extra={"event": "v1_refused", "peer": peer})
                await _refuse(reader, writer, _v1_refusal())
                return None
            return Opened(Kind.V1)
        if 0x41 <= first <= 0x5A:
            if self.settings.require_tls:
                log.info("plaintext v2 connection refused (CHAT_REQUIRE_TLS=true)",
                         extra={"event": "tls_required", "peer": peer})
                metrics.connection_rejected(metrics.RejectReason.TLS_REQUIRED)
                await _refuse(reader, writer, _v2_error(ErrorCode.TLS_REQUIRED, TLS_REQUIRED_MESSAGE))
                return None
            return Opened(Kind.V2)
        return Opened(Kind.OTHER)

    def _trusted(self, writer: asyncio.StreamWriter) -> bool:
        return _transport_peer(writer) in self.settings.trusted_proxies

    async def _proxy_header(self, raw: _RawSocket, writer: asyncio.StreamWriter,
                            timeout: float) -> bool:
        """A trusted balancer's PROXY header; ``False``: drop the connection."""
        if not self._trusted(writer):
            return True
        proxy = _transport_peer(writer)
        try:
            header = await read_proxy_header(raw, min(timeout, PROXY_HEADER_SECONDS))
        except (ProxyProtocolError, TimeoutError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ProxyProtocolError) else (
                "no PROXY header in time" if isinstance(exc, TimeoutError) else
                f"connection failed: {exc}")
            # A TCP health check that opens and closes is routine, not a warning.
            log.log(logging.DEBUG if isinstance(exc, NoProxyHeader) else logging.WARNING,
                    "connection from trusted proxy dropped: %s", reason,
                    extra={"event": "proxy_header_invalid", "peer": proxy})
            return False
        if header.source is not None:
            set_client_address(writer, header.source[0])
        log.debug("PROXY v%d %s from %s", header.version, header.command.value, proxy,
                  extra={"event": "proxy_header", "peer": client_address(writer)})
        return True

    async def _upgrade(self, writer: asyncio.StreamWriter, peer: str) -> Opened | None:
        assert self.context is not None
        try:
            # The outer timeout is a guard; asyncio's own handshake timeout fires first.
            async with asyncio.timeout(self.handshake_timeout + 1):
                await writer.start_tls(self.context, ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, ssl.SSLError, EOFError, TimeoutError) as exc:
            reason = _handshake_failure(exc)
            log.info("TLS handshake failed: %s", reason,
                     extra={"event": "tls_handshake_failed", "peer": peer})
            metrics.connection_rejected(metrics.RejectReason.HANDSHAKE)
            _abort(writer)
            return None
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            log.debug("TLS established: %s %s", ssl_object.version(), ssl_object.cipher()[0],
                      extra={"event": "tls_established", "peer": peer})
        return Opened(Kind.TLS)


# ---------------------------------------------------------------------------- helpers
class _RawSocket:
    """The connection's socket while asyncio does not read it (paused since
    ``connection_made``): waits for readability on a duplicate descriptor (the
    transport owns the original, and asyncio refuses a second reader on it),
    peeks, and takes exact byte counts. Implements :class:`chat_server.peer.RawSocket`."""

    def __init__(self, writer: asyncio.StreamWriter, protocol: _PausedAtStart,
                 dup: socket.socket) -> None:
        self._writer = writer
        self._protocol = protocol
        self._dup = dup

    @classmethod
    def open(cls, writer: asyncio.StreamWriter, protocol: _PausedAtStart) -> _RawSocket | None:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return None
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return None
        dup.setblocking(False)
        return cls(writer, protocol, dup)

    def __enter__(self) -> _RawSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._dup.close()  # closes the duplicate only; the connection stays open
        # The gate is done waiting: a connection that is kept holds no future.
        lost = self._protocol.lost
        if lost is not None and not lost.done():
            self._protocol.lost = None

    async def readable(self) -> bool:
        protocol = self._protocol
        if protocol.is_lost or self._writer.transport.is_closing():
            return False
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not ready.done():
                ready.set_result(None)

        if protocol.lost is None:
            protocol.lost = loop.create_future()
        lost = protocol.lost
        fd = self._dup.fileno()
        loop.add_reader(fd, wake)
        lost.add_done_callback(wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
            lost.remove_done_callback(wake)
        return not (protocol.is_lost or self._writer.transport.is_closing())

    def peek(self, size: int) -> bytes | None:
        try:
            return self._dup.recv(size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return None  # woken without data (cannot happen after readability, but be safe)
        except OSError:
            return b""  # reset: as good as EOF

    def take(self, size: int) -> None:
        while size > 0:
            got = len(self._dup.recv(size))
            if got == 0:
                raise ConnectionResetError("connection closed")
            size -= got

    async def first_byte(self, timeout: float) -> int | None:
        """The first byte the peer sent, without taking it off the socket; None
        on EOF, reset or ``timeout`` seconds of silence."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not await self.readable():
                        return None
                    data = self.peek(1)
                    if data is not None:
                        return data[0] if data else None
        except TimeoutError:
            return None


def _transport_peer(writer: asyncio.StreamWriter) -> str:
    """The TCP peer itself (a balancer, when there is one)."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "?")


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


def _handshake_failure(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        return "handshake not completed in time"
    if isinstance(exc, ConnectionResetError | EOFError | BrokenPipeError):
        return "peer closed the connection"
    return str(exc) or type(exc).__name__


def _v1_refusal() -> bytes:
    """What the original client understands as "no": its login refusal."""
    conn = Connection(Role.SERVER)
    conn.receive_data(b"0")  # the first byte of a v1 length header
    conn.next_event()
    return conn.error_reply(RemoteProtocolError("v1 is disabled", ErrorCode.PROTOCOL_ERROR))


def _v2_error(code: ErrorCode, message: str) -> bytes:
    conn = Connection(Role.SERVER)
    conn.receive_data(b"H")  # the first byte of a v2 HELLO
    conn.next_event()
    return conn.send(Error(code, message))


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes) -> None:
    """Send ``reply``, stop writing, read and drop what the client still sends
    until it closes (bounded), then close."""
    try:
        writer.write(reply)
        async with asyncio.timeout(LINGER_SECONDS):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            left = LINGER_BYTES
            while left > 0:
                data = await reader.read(min(left, 4096))
                if not data:
                    break
                left -= len(data)
    except (TimeoutError, OSError, RuntimeError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LINGER_SECONDS):
                await writer.wait_closed()
