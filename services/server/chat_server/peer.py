"""
chat_server.peer
~~~~~~~~~~~~~~~~

Who is at the other end of a connection. :func:`client_address` is the one
answer every part uses (session logs, login throttling per address, connection
caps per address): behind a trusted load balancer it is the client that the
balancer's PROXY protocol header named, otherwise the TCP peer.

The header itself is read by the gate (:mod:`chat_server.gate`) before anything
else, with :func:`read_proxy_header`: the gate gives it a :class:`RawSocket`, a
view of the connection's socket that can peek and take exact byte counts, so
the client's own first byte stays on the socket for the TLS and protocol sniffing
that follows. Who may (and must) send a header: ``CHAT_TRUSTED_PROXIES``
(:class:`chat_server.proxy_protocol.TrustedProxies`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from weakref import WeakKeyDictionary

from .proxy_protocol import MAX_HEADER_BYTES, HeaderReader, ProxyHeader, ProxyProtocolError

__all__ = ["PROXY_HEADER_SECONDS", "NoProxyHeader", "RawSocket", "client_address", "read_proxy_header",
           "set_client_address"]

#: A balancer sends its header the moment it connects; waiting longer than
#: this only holds a connection slot for something that is not a balancer.
PROXY_HEADER_SECONDS = 3.0

_named: WeakKeyDictionary[asyncio.StreamWriter, str] = WeakKeyDictionary()


def client_address(writer: asyncio.StreamWriter) -> str:
    """The client's address (host only) for logs, throttling and caps."""
    named = _named.get(writer)
    if named is not None:
        return named
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "?")


def set_client_address(writer: asyncio.StreamWriter, host: str) -> None:
    """Record the address a trusted balancer named for this connection."""
    _named[writer] = host


class NoProxyHeader(ProxyProtocolError):
    """The connection closed before sending a byte (a TCP health check does that)."""


class RawSocket(Protocol):
    """The connection's socket before anything has read from it."""

    async def readable(self) -> bool:
        """Wait until bytes (or EOF) can be read; ``False`` if the connection closed."""

    def peek(self, size: int) -> bytes | None:
        """Up to ``size`` bytes that are ready, left on the socket (``b""``: EOF;
        ``None``: nothing ready after all)."""

    def take(self, size: int) -> None:
        """Remove exactly ``size`` bytes that :meth:`peek` has shown."""


async def read_proxy_header(raw: RawSocket, timeout: float = PROXY_HEADER_SECONDS) -> ProxyHeader:
    """Read one PROXY header (v1 or v2) and nothing after it. Raises
    :exc:`ProxyProtocolError` (junk, EOF inside a header), :exc:`NoProxyHeader`
    (EOF before any byte) or :exc:`TimeoutError`."""
    reader = HeaderReader()
    async with asyncio.timeout(timeout):
        while reader.header is None:
            data = raw.peek(MAX_HEADER_BYTES + 1) if await raw.readable() else b""
            if data is None:
                continue
            if not data:
                if reader.started:
                    raise ProxyProtocolError("connection closed inside its PROXY header")
                raise NoProxyHeader("connection closed before a PROXY header")
            raw.take(reader.feed(data))
    return reader.header
