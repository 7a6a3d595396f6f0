"""
chat_server.admission
~~~~~~~~~~~~~~~~~~~~~

Who may hold a connection, and how accepted sockets are set up.

Limits (each refusal is a clear ``too_many_connections`` error in the peer's
own protocol, then a close; see :func:`turn_away`):

* the server's total (``CHAT_MAX_CONNECTIONS``);
* per client address, all connections (``CHAT_MAX_CONNECTIONS_PER_ADDRESS``),
  so one address cannot fill the server;
* per client address, connections that have not logged in yet
  (``CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS``), so one address holding idle
  sockets open (and reconnecting when the login deadline cuts them) cannot
  crowd out anyone else's login. This is the limit an anonymous attacker meets;
  the total per address is the one a user with an account meets.

* per client address, *new* connections per second
  (``CHAT_CONNECT_RATE_PER_ADDRESS``, bursts up to
  ``CHAT_CONNECT_BURST_PER_ADDRESS``; :class:`ConnectRate`, a token bucket):
  a client reconnecting in a loop costs the server an accept, a task, the gate
  and a codec per connection, however quickly each one closes. Refused
  connections get the same ``too_many_connections`` reply, but only a few per
  second per address (:data:`RATE_REPLIES_PER_SECOND`); the rest of a storm is
  dropped the moment it is accepted (:meth:`Admission.shed`, called before the
  connection gets a task), so a storm costs little more than its accepts.

A connection is admitted when it is accepted, before its first byte (a socket
that never sends anything holds a place too), and holds a :class:`Ticket` until
it closes. Its address is :func:`chat_server.peer.client_address` (the one
answer to "who is this"; ``Session.address`` is the same), counted by what
:func:`client_key` makes of it: an IPv4 address as is (an IPv4-mapped IPv6
address as its IPv4 form), an IPv6 address by its /64, because one client
usually owns a whole /64. The login throttle (:mod:`chat_server.throttle`) keys
by the same function. A connection from a trusted load balancer is admitted
under the server's total only; once its PROXY header has named the client, its
ticket moves to that address (:meth:`Admission.move`) and the per-address
limits apply there.

A connection counts as logged in from the moment the session attached to its
ticket has its ``user`` set; the per-address counts are settled lazily, when
the next connection from that address arrives, so nothing has to tell this
module about a login.

Accepted sockets get TCP keepalive (a peer that vanished without a FIN or RST,
e.g. a laptop closed or a NAT entry dropped, is found in about two minutes
instead of after the 15-minute idle timeout) and a fixed send buffer (the kernel
then holds at most about twice :data:`SEND_BUFFER` bytes for a client that
stops reading, instead of autotuning up to megabytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from chatcore.protocol import Connection, Error, ErrorCode, Role

from .metrics import RejectReason

__all__ = [
    "KEEPALIVE_COUNT",
    "KEEPALIVE_IDLE",
    "KEEPALIVE_INTERVAL",
    "MAX_SNIFFING",
    "RATE_REPLIES_PER_SECOND",
    "SEND_BUFFER",
    "Admission",
    "ConnectRate",
    "Limit",
    "Member",
    "Ticket",
    "Turnaway",
    "client_key",
    "configure_socket",
    "turn_away",
]

log = logging.getLogger("chat_server")

#: Seconds of silence before the first keepalive probe, between probes, and the
#: number of unanswered probes after which the kernel drops the connection:
#: a dead peer goes within 60 + 6 x 10 = 120 s.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6
#: SO_SNDBUF of accepted sockets (Linux doubles the figure for its bookkeeping).
#: Answers are text at reading speed; 64 KiB is many seconds of any model's output.
SEND_BUFFER = 64 * 1024
#: How long a refused connection may take to show which protocol it speaks.
SNIFF_SECONDS = 1.0
#: Refused connections that may wait for their first bytes at once; beyond that a
#: refused connection is closed without a reply (a flood must not hold sockets).
MAX_SNIFFING = 256
#: Connections refused by the connection rate that still get a reply, per
#: second and address (in bursts of up to :data:`RATE_REPLY_BURST`): enough
#: for a client to learn why; the rest of a storm is dropped without one.
RATE_REPLIES_PER_SECOND = 1.0
RATE_REPLY_BURST = 3


def client_key(address: str | tuple[Any, ...] | None) -> str | None:
    """The key a client address is counted and throttled by (see the module
    docstring); ``None`` for no address. Accepts a host string or a socket
    address tuple."""
    if address is None:
        return None
    return _key_of_host(str(address[0] if isinstance(address, tuple) else address))


@functools.lru_cache(maxsize=1024)
def _key_of_host(host: str) -> str:
    """:func:`client_key` of a host string (cached: every accepted connection
    asks, and parsing an address costs more than the rest of a refusal)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # a Unix socket path, "?"...: counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Member(Protocol):
    """What admission needs of a connection's session: whether it logged in."""

    @property
    def user(self) -> str | None: ...


class Limit(StrEnum):
    """Which limit turned a connection away (the log line's ``limit``)."""

    SERVER = "server"
    ADDRESS = "address"
    ADDRESS_UNAUTHENTICATED = "address_unauthenticated"
    #: New connections from one address came faster than CHAT_CONNECT_RATE_PER_ADDRESS.
    ADDRESS_RATE = "address_rate"
    #: Not a count: the server is stopping (ChatService turns new connections away).
    SHUTDOWN = "shutdown"

    @property
    def reject_reason(self) -> RejectReason:
        """The ``chat_connections_rejected_total`` reason it counts under."""
        if self is Limit.SHUTDOWN:
            return RejectReason.SHUTTING_DOWN
        if self is Limit.ADDRESS_RATE:
            return RejectReason.ADDRESS_RATE
        return RejectReason.CONNECTION_LIMIT if self is Limit.SERVER else RejectReason.ADDRESS_LIMIT


@dataclass(frozen=True)
class Turnaway:
    """A connection refused by a limit: what the peer is told, and which limit."""

    code: ErrorCode
    #: For the peer.
    message: str
    limit: Limit
    #: Whether the peer is told (False: closed without a word, a storm's rest).
    reply: bool = True


class Ticket:
    """One admitted connection's place, until :meth:`release`."""

    __slots__ = ("_admission", "counted", "key", "member")

    def __init__(self, admission: Admission, key: str | None, counted: bool) -> None:
        self._admission: Admission | None = admission
        self.key = key
        #: Counted under its address (not yet, for a balancer's connection).
        self.counted = counted
        #: The session, once there is one (:meth:`attach`).
        self.member: Member | None = None

    def attach(self, member: Member) -> None:
        """The connection's session: it counts as logged in once ``member.user`` is set."""
        self.member = member

    @property
    def logged_in(self) -> bool:
        return self.member is not None and self.member.user is not None

    def release(self) -> None:
        """The connection closed (idempotent)."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.release(self)


@dataclass
class _Address:
    total: int = 0
    #: Tickets not yet seen logged in (pruned when the next one arrives).
    pending: set[Ticket] = field(default_factory=set)
    prune_at: int = 8


class ConnectRate:
    """New connections per address: a token bucket per key (``rate`` tokens a
    second, at most ``burst``), and a smaller one of refusals that get a reply.

    Memory: one small list per key seen recently; a key whose buckets have
    refilled is forgotten (swept when the table has doubled since the last
    sweep, so the cost is O(1) amortised and the table stays near the number
    of addresses connecting within ``burst / rate`` seconds)."""

    __slots__ = ("_buckets", "_clock", "_sweep_at", "burst", "rate")

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a connection rate must be >= 0 with a burst >= 1")
        #: Per second; 0 turns the limit off.
        self.rate = rate
        self.burst = burst
        self._clock = clock
        #: key -> [connection tokens, reply tokens, when last refilled]
        self._buckets: dict[str | None, list[float]] = {}
        self._sweep_at = 1024

    def _refilled(self, key: str | None) -> list[float] | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        elapsed = now - bucket[2]
        if elapsed > 0:
            bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
            bucket[1] = min(RATE_REPLY_BURST, bucket[1] + elapsed * RATE_REPLIES_PER_SECOND)
            bucket[2] = now
        return bucket

    def take(self, key: str | None) -> bool:
        """A new connection from ``key``: ``True`` (a token taken) if it may come in."""
        if self.rate == 0:
            return True
        bucket = self._refilled(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep()
            self._buckets[key] = [self.burst - 1.0, float(RATE_REPLY_BURST), self._clock()]
            return True
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def reply(self, key: str | None) -> bool:
        """A connection from ``key`` refused by the rate: ``True`` (a reply
        token taken) if it is told so, ``False`` if it is closed without a word."""
        bucket = self._refilled(key)
        if bucket is None or bucket[1] < 1:
            return False
        bucket[1] -= 1
        return True

    def exhausted(self, key: str | None) -> bool:
        """``key`` is over its rate and has no reply left: its next connection
        would be closed without a word (nothing is taken)."""
        if self.rate == 0:
            return False
        bucket = self._refilled(key)
        return bucket is not None and bucket[0] < 1 and bucket[1] < 1

    def _sweep(self) -> None:
        now = self._clock()
        full = self.burst / self.rate if self.rate else 0.0
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[2] < full}
        self._sweep_at = max(1024, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)


class Admission:
    """Counts connections by address and decides on each new one."""

    def __init__(self, max_connections: int, max_per_address: int,
                 max_unauthenticated_per_address: int, *,
                 connect_rate: float = 0.0, connect_burst: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min(max_connections, max_per_address, max_unauthenticated_per_address) < 1:
            raise ValueError("connection limits must be >= 1")
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.max_unauthenticated_per_address = max_unauthenticated_per_address
        #: New connections per second and address (0: no limit).
        self.rate = ConnectRate(connect_rate, connect_burst, clock=clock)
        self.total = 0
        #: Refused connections waiting to show their protocol (see :meth:`refuse`).
        self.sniffing = 0
        self._addresses: dict[str | None, _Address] = {}

    def __len__(self) -> int:
        return self.total

    def admit(self, address: str, *, per_address: bool = True) -> Ticket | Turnaway:
        """A :class:`Ticket` for a new connection from ``address`` (counted in),
        or why it is refused (then nothing is counted). ``per_address=False``:
        count it under the server's total only, until :meth:`move` (a trusted
        balancer's connection, whose client is not known yet)."""
        if self.total >= self.max_connections:
            return Turnaway(ErrorCode.TOO_MANY_CONNECTIONS,
                           "the server is at its connection limit; try again later", Limit.SERVER)
        key = client_key(address)
        if per_address and (refusal := self._rate(key) or self._room(key)) is not None:
            return refusal
        ticket = Ticket(self, key, per_address)
        self.total += 1
        if per_address:
            self._count(ticket)
        return ticket

    def move(self, ticket: Ticket, address: str) -> Turnaway | None:
        """The connection turned out to come from ``address`` (a PROXY protocol
        header): count it there, or say why it may not stay (it then stays
        counted as it was; release it as usual)."""
        key = client_key(address)
        if ticket.counted and key == ticket.key:
            return None
        refusal = self._rate(key) or self._room(key)
        if refusal is not None:
            return refusal
        if ticket.counted:
            self._uncount(ticket)
        ticket.key, ticket.counted = key, True
        self._count(ticket)
        return None

    def shed(self, address: str) -> bool:
        """Whether a connection just accepted from ``address`` is to be
        dropped at once, before it gets a task or a byte is read: its address
        is over the connection rate and has had its replies for now (the rest
        of a reconnect storm). Counts nothing (the connection never existed)."""
        return self.rate.exhausted(client_key(address))

    def _rate(self, key: str | None) -> Turnaway | None:
        if self.rate.take(key):
            return None
        return Turnaway(ErrorCode.TOO_MANY_CONNECTIONS,
                        "too many new connections from your address; wait a few seconds "
                        "before connecting again", Limit.ADDRESS_RATE, reply=self.rate.reply(key))

    def _room(self, key: str | None) -> Turnaway | None:
        entry = self._addresses.get(key)
        if entry is None:
            return None
        if entry.total >= self.max_per_address:
            return Turnaway(ErrorCode.TOO_MANY_CONNECTIONS,
                           "too many connections from your address; close some and try again",
                           Limit.ADDRESS)
        if len(entry.pending) >= min(self.max_unauthenticated_per_address, entry.prune_at):
            # Settle logins lazily; pruning when the set has doubled since the
            # last time keeps this O(1) amortised and the set small.
            entry.pending = {t for t in entry.pending if not t.logged_in}
            entry.prune_at = 2 * len(entry.pending) + 8
        if len(entry.pending) >= self.max_unauthenticated_per_address:
            return Turnaway(ErrorCode.TOO_MANY_CONNECTIONS,
                           "too many connections from your address are not logged in yet; "
                           "try again in a moment", Limit.ADDRESS_UNAUTHENTICATED)
        return None

    def _count(self, ticket: Ticket) -> None:
        """Count ``ticket`` under its address."""
        entry = self._addresses.get(ticket.key)
        if entry is None:
            entry = self._addresses[ticket.key] = _Address()
        entry.total += 1
        entry.pending.add(ticket)

    def _uncount(self, ticket: Ticket) -> None:
        entry = self._addresses.get(ticket.key)
        if entry is None:
            return
        entry.pending.discard(ticket)
        entry.total -= 1
        if entry.total <= 0:
            del self._addresses[ticket.key]

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s connection closed (:meth:`Ticket.release` calls this once)."""
        self.total -= 1
        if ticket.counted:
            self._uncount(ticket)

    @contextlib.contextmanager
    def refusing(self) -> Iterator[bool]:
        """Around turning a refused connection away: True while fewer than
        :data:`MAX_SNIFFING` refused connections are waiting to show their
        protocol (wait for it and reply), False beyond (close at once)."""
        reply = self.sniffing < MAX_SNIFFING
        self.sniffing += reply
        try:
            yield reply
        finally:
            self.sniffing -= reply

    def connections_from(self, address: str) -> tuple[int, int]:
        """(all, not yet logged in) connections counted for ``address``'s key."""
        entry = self._addresses.get(client_key(address))
        if entry is None:
            return 0, 0
        return entry.total, sum(1 for t in entry.pending if not t.logged_in)


def configure_socket(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive and a fixed send buffer on an accepted connection (where the
    platform has the options; otherwise left as it is)."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Linux and recent macOS/BSD names; TCP_KEEPALIVE is macOS's name for IDLE.
        idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        for option, value in ((idle, KEEPALIVE_IDLE),
                              (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
                              (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT)):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


async def turn_away(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    code: ErrorCode, message: str, *, sniff: bool = True) -> None:
    """Refuse a connection in the peer's protocol, then close it: wait up to
    :data:`SNIFF_SECONDS` for its first bytes to learn v1 or v2 (a v2 client gets
    ``ERROR code``, a v1 client its original refusal string), send, close.
    Without ``sniff`` the connection is closed at once."""
    conn = Connection(Role.SERVER)
    try:
        if sniff:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SNIFF_SECONDS):
                    while conn.version is None:
                        data = await reader.read(64)
                        conn.receive_data(data)
                        if not data:
                            break
                        with contextlib.suppress(Exception):
                            conn.next_event()
            with contextlib.suppress(Exception):
                writer.write(conn.send(Error(code, message)))
                async with asyncio.timeout(2):
                    await writer.drain()
    except Exception:  # the peer is being turned away; nothing else to do
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await writer.wait_closed()
