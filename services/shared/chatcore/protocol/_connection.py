"""
chatcore.protocol._connection
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

:class:`Connection`, the facade of the sans-IO codec: bytes in through
:meth:`~Connection.receive_data`, typed events out of
:meth:`~Connection.next_event`, events in through :meth:`~Connection.send`,
bytes out. No sockets, no asyncio, no clocks, no logging: timeouts, limits on
connections and everything else that needs I/O belong to the adapters.
"""

from __future__ import annotations

from typing import Protocol

from ._buffer import FrameLimits, ReceiveBuffer
from ._errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import AuthResult, Bye, ConnectionClosed, Error, Event, frame_name
from ._state import ENTRY_STATE, LAST_WORDS, Role, State, next_state, transition_key
from ._v1 import V1ClientCodec, V1ServerCodec
from ._v2 import V2Codec

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_UNAUTH_FRAME_SIZE",
    "NEED_DATA",
    "Connection",
]

#: Largest frame body accepted once the peer is logged in. A chat message is
#: text typed by a person: 64 KiB is ~10,000 words. Redis bounds inline
#: requests at the same 64 KiB (PROTO_INLINE_MAX_SIZE), asyncio's stream limit
#: is 64 KiB, and NATS defaults to 1 MiB payloads for arbitrary data.
DEFAULT_MAX_FRAME_SIZE = 64 * 1024
#: Largest frame body accepted before login: HELLO, a username, a password.
#: Tighter limits before authentication follow Redis' fix for CVE-2021-32675;
#: NATS allows 4 KiB for a control line.
DEFAULT_MAX_UNAUTH_FRAME_SIZE = 4 * 1024


class _SentinelType(type):
    def __repr__(cls) -> str:
        return cls.__name__


class NEED_DATA(metaclass=_SentinelType):
    """Returned by :meth:`Connection.next_event` when more bytes are needed
    (h11's sentinel: ``type(NEED_DATA) is _SentinelType``, compare with ``is``)."""


class _Codec(Protocol):
    """What a per-version codec offers. It parses from the shared
    :class:`ReceiveBuffer` and reads the shared :class:`FrameLimits`; it never
    sees the :class:`Connection`, and it never decides what is legal in a
    state: the state table does (``_state.py``). ``state`` is passed in."""

    version: int

    def read(self, state: State) -> Event | None: ...

    def write(self, event: Event, state: State) -> tuple[bytes, list[Event]]: ...

    def error_reply(self, exc: RemoteProtocolError, state: State) -> bytes: ...

    def data_to_send(self) -> bytes: ...


class Connection:
    """One end of one chat session, for either protocol version.

    Args:
        role: :attr:`Role.SERVER` or :attr:`Role.CLIENT`.
        version: 1 or 2. A client defaults to 2. A server normally leaves it
            None and learns the version from the peer's first byte: an ASCII
            digit starts a v1 length header, an uppercase letter a v2 TYPE.
        max_frame_size: largest frame body accepted after a successful login.
        max_unauthenticated_frame_size: largest frame body accepted before.

    The adapter loop (server and client alike)::

        while True:
            event = conn.next_event()
            if out := conn.data_to_send():
                write(out)
            if event is NEED_DATA:
                conn.receive_data(read(65536))  # b"" at EOF
                continue
            handle(event)
    """

    # One per connection: no instance dict (docs/BENCHMARKS.md, idle connections).
    __slots__ = (
        "_buffer", "_codec", "_error", "_limits", "_our_end", "_state", "_state_before_error",
        "_their_end", "role",
    )

    def __init__(
        self,
        role: Role,
        *,
        version: int | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_unauthenticated_frame_size: int = DEFAULT_MAX_UNAUTH_FRAME_SIZE,
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError("role must be Role.CLIENT or Role.SERVER")
        if role is Role.CLIENT and version is None:
            version = 2
        if version not in (None, 1, 2):
            raise ValueError("version must be 1 or 2")
        if max_frame_size < 0 or max_unauthenticated_frame_size < 0:
            raise ValueError("frame size limits must be >= 0")
        self.role = role
        self._buffer = ReceiveBuffer()
        self._limits = FrameLimits(max_frame_size, max_unauthenticated_frame_size)
        self._state = State.HANDSHAKE
        self._state_before_error = State.HANDSHAKE
        self._error: RemoteProtocolError | None = None
        self._codec: _Codec | None = None
        # Each side's end (_state.py Rule 4): we said our last word / the peer did.
        self._our_end = False
        self._their_end = False
        if version is not None:
            self._start(version)

    # -- public API -------------------------------------------------------

    @property
    def version(self) -> int | None:
        """1 or 2; None on a server until the peer's first byte arrives."""
        return None if self._codec is None else self._codec.version

    @property
    def state(self) -> State:
        return self._state

    @property
    def max_frame_size(self) -> int:
        """Largest frame body accepted after a successful login."""
        return self._limits.authenticated

    @property
    def max_unauthenticated_frame_size(self) -> int:
        """Largest frame body accepted before it."""
        return self._limits.unauthenticated

    @property
    def frame_limit(self) -> int:
        """The receive limit in force now (one of the two above)."""
        return self._limits.current

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received and not parsed yet, and whether the peer's EOF
        came (h11's ``trailing_data``). After :data:`NEED_DATA` this is at
        most one incomplete frame within :attr:`frame_limit`: the codec never
        buffers more (docs/PROTOCOL.md §10)."""
        return self._buffer.peek(len(self._buffer)), self._buffer.eof

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means EOF.

        Raises:
            RuntimeError: data after EOF (a bug in the adapter, as in h11).
        """
        if data:
            if self._buffer.eof:
                raise RuntimeError("received close, then received more data?")
            if self._error is None:  # a broken connection reads nothing more
                self._buffer.feed(data)
        else:
            self._buffer.eof = True

    def next_event(self) -> Event | type[NEED_DATA]:
        """The next event from the peer, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the peer broke the protocol. The state becomes
                ERROR and every later call raises again; send
                :meth:`error_reply` and close. Any other exception is a bug.
        """
        if self._error is not None:
            raise RemoteProtocolError(str(self._error), self._error.code)
        try:
            return self._next_event()
        except ProtocolError as exc:
            # A LocalProtocolError here means an event refused a value that
            # came from the wire: the peer's fault (h11's translation).
            remote = exc if isinstance(exc, RemoteProtocolError) else RemoteProtocolError(str(exc))
            self._error = remote
            self._state_before_error = self._state
            self._state = State.ERROR
            if remote is exc:
                raise
            raise remote from exc

    def send(self, event: Event) -> bytes:
        """The bytes that carry ``event`` to the peer (possibly ``b""`` when the
        peer's version has no way to say it and it is only informational).

        Raises:
            LocalProtocolError: the event is illegal in this state or version.
        """
        if not isinstance(event, Event) or isinstance(event, ConnectionClosed):
            raise LocalProtocolError(f"can't send {frame_name(event)}")
        if self._state is State.ERROR:
            raise LocalProtocolError("the peer broke the protocol: use error_reply()")
        new_state = next_state(self.role, self._state, event)
        if new_state is None:
            after = " after our last word" if self._our_end else ""
            raise LocalProtocolError(
                f"can't send {frame_name(event)} in state {self._state.name}{after}"
            )
        if self._our_end:
            # Only Bye / Error are legal here, and we said ours already:
            # nothing more goes out (Rule 4), whatever the version.
            return b""
        if self._codec is None:
            # A server that has not seen a byte yet doesn't know which
            # language to speak: it can only close, without a word (and stays
            # silent if the peer's bytes turn up afterwards).
            if not isinstance(event, (Bye, Error)):
                raise LocalProtocolError("the peer's protocol version is not known yet")
            self._apply(self.role, event, new_state)
            return b""
        data, implied = self._codec.write(event, self._state)
        self._apply(self.role, event, new_state)
        for extra in implied:
            self._apply(self.role, extra, next_state(self.role, self._state, extra) or self._state)
        return data

    def data_to_send(self) -> bytes:
        """Bytes the codec queued by itself: the v1 server's reply to the
        username, the v1 client's password frame. Call after next_event()."""
        return b"" if self._codec is None else self._codec.data_to_send()

    def error_reply(self, exc: ProtocolError) -> bytes:
        """The best last words for this peer after ``exc``; the state becomes
        CLOSED. v2: an ERROR frame. v1 server: the login refusal during login,
        else ``[ERROR] code: message`` chunks and ``<GoodBye>``. Nothing when
        the peer's version is unknown or nothing can be said."""
        state = self._state_before_error if self._state is State.ERROR else self._state
        remote = (
            exc if isinstance(exc, RemoteProtocolError) else RemoteProtocolError(str(exc), exc.code)
        )
        # Nothing when we said our last word already (Rule 4) or speak no version yet.
        data = b"" if self._our_end or self._codec is None else self._codec.error_reply(remote, state)
        self._state = State.CLOSED
        self._our_end = True
        return data

    # -- internals --------------------------------------------------------

    def _start(self, version: int) -> None:
        codec: _Codec
        if version == 2:
            codec = V2Codec(self.role, self._buffer, self._limits)
        elif self.role is Role.SERVER:
            codec = V1ServerCodec(self._buffer, self._limits)
        else:
            codec = V1ClientCodec(self._buffer)
        self._codec = codec
        if self._state is State.HANDSHAKE:  # not if we closed before a byte came
            self._state = ENTRY_STATE[version]

    def _apply(self, sender: Role, event: Event, new_state: State) -> None:
        if isinstance(event, AuthResult) and event.ok:
            self._limits.logged_in = True
        if transition_key(event) in LAST_WORDS:
            if sender is self.role:
                self._our_end = True
            else:
                self._their_end = True
        self._state = new_state

    def _next_event(self) -> Event | type[NEED_DATA]:
        while True:
            if self._codec is None:
                if not self._buffer:
                    return self._need_data_or_closed()
                first = self._buffer.first()
                if 0x30 <= first <= 0x39:  # ASCII digit: a v1 length header
                    self._start(1)
                elif 0x41 <= first <= 0x5A:  # ASCII uppercase: a v2 TYPE
                    self._start(2)
                else:
                    raise RemoteProtocolError("unrecognised protocol", ErrorCode.PROTOCOL_ERROR)
            assert self._codec is not None
            event = self._codec.read(self._state)
            if event is None:
                return self._need_data_or_closed()
            new_state = next_state(self.role.peer, self._state, event)
            if new_state is None:
                if self._state is State.CLOSED and not self._their_end:
                    continue  # sent before the peer saw our close (Rule 4)
                after = " after the peer's last word" if self._their_end else ""
                raise RemoteProtocolError(
                    f"unexpected {frame_name(event)} in state {self._state.name}{after}",
                    ErrorCode.UNEXPECTED_FRAME,
                )
            self._apply(self.role.peer, event, new_state)
            return event

    def _need_data_or_closed(self) -> Event | type[NEED_DATA]:
        if not self._buffer.eof:
            return NEED_DATA
        if self._buffer and self._state is not State.CLOSED:
            raise RemoteProtocolError("peer closed connection mid-frame")
        event = ConnectionClosed()
        self._apply(self.role.peer, event, State.CLOSED)
        return event
