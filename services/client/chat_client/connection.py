"""
chat_client.connection
~~~~~~~~~~~~~~~~~~~~~~

A blocking socket adapter over the sans-IO codec (:mod:`chatcore.protocol`).

One background thread owns ``recv()``: it feeds the codec, answers the
server's ``PING`` with ``PONG`` by itself (so a user who takes five minutes to
type a question is not dropped as idle), and puts every other event into a
queue. The caller's thread takes events from that queue with a timeout and
sends through :meth:`ChatConnection.send`. A single lock serialises every use
of the codec and of ``sendall()``, because the codec is not thread-safe and the
reader thread writes too (PONGs and the codec's automatic v1 replies).

Waiting on a queue instead of on the socket also keeps the caller's thread
responsive: it can poll a "Ctrl-C was pressed" flag between events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import socket
import threading
import time
from collections.abc import Callable

from chatcore.protocol import (
    NEED_DATA,
    Authenticate,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    LocalProtocolError,
    Notice,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    ServerHello,
    State,
    frame_name,
)

from . import __version__
from .errors import AuthFailed, ConnectionLost, ServerError, TokenRefused
from .tls import TLSOptions, TLSSocket, open_tls

__all__ = ["AGENT", "ChatConnection", "server_error"]

AGENT = f"chat-client/{__version__}"

#: How long login and the v2 hello may take before we give up.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0


def server_error(error: Error) -> ServerError | AuthFailed:
    """The exception for an ``Error`` event outside an answer."""
    text = error.message or error.code.value.replace("_", " ")
    if error.code is ErrorCode.AUTH_THROTTLED:
        return AuthFailed(f"authentication refused: {text}")
    return ServerError(f"server error ({error.code.value}): {text}")


class ChatConnection:
    """One client connection: ``connect()`` → ``handshake()`` → ``login()`` →
    ``send_message()`` / ``poll()`` … → ``close()``."""

    def __init__(self, sock: socket.socket | TLSSocket, *, version: int, address: str) -> None:
        self.version = version
        self.address = address
        self.hello: ServerHello | None = None
        self.user = ""
        #: The session token of the last login (v2; ``None``: the server issued none).
        #: A secret: never printed or logged.
        self.session_token: str | None = None
        self._sock = sock
        self._conn = Connection(Role.CLIENT, version=version)
        self._lock = threading.Lock()
        self._events: queue.Queue[Event | ConnectionLost] = queue.Queue()
        self._failure: ConnectionLost | None = None
        self._closing = False
        self._eof = threading.Event()
        self._next_id = 0
        #: Called from the reader thread once the connection is gone (EOF,
        #: reset, protocol error); the interactive UI uses it to wake its prompt.
        self.on_closed: Callable[[], None] | None = None
        self._reader = threading.Thread(
            target=self._read_loop, name="chat-client-reader", daemon=True
        )

    # -- opening -------------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int, *, version: int = 2,
                timeout: float = 10.0, tls: TLSOptions | None = None) -> ChatConnection:
        """Open the connection; with ``tls``, over TLS with a trusted certificate
        (:func:`chat_client.tls.open_tls`: raises ``TrustError`` otherwise)."""
        address = f"{host}:{port}"

        def dial() -> socket.socket:
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ConnectionLost(f"cannot connect to {address}: {reason}") from None
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        stream: socket.socket | TLSSocket = (
            dial() if tls is None else open_tls(dial, host, port, tls, timeout))
        # The reader blocks in recv() for as long as the session lasts; timeouts
        # are applied to the event queue instead.
        stream.settimeout(None)
        self = cls(stream, version=version, address=address)
        self._reader.start()
        return self

    def handshake(self, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                  on_notice: Callable[[Notice], None] | None = None) -> None:
        """v2: exchange hellos. v1 has no hello; nothing to do."""
        if self.version == 1:
            return
        self.send(ClientHello(versions=(2,), agent=AGENT))
        event = self._next_significant(timeout, "the server's hello", on_notice)
        if isinstance(event, ServerHello):
            self.hello = event
            return
        raise self._unexpected(event, "the server's hello")

    def login(self, user: str, password: str, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
              on_notice: Callable[[Notice], None] | None = None) -> None:
        """Authenticate; raises :class:`AuthFailed` on bad credentials. A v2
        server's session token, if it issued one, is kept in :attr:`session_token`."""
        self._login(Authenticate(user=user, password=password), timeout, on_notice)

    def login_with_token(self, user: str, token: str,
                         timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
        """Authenticate with a session token from an earlier login (v2,
        docs/PROTOCOL.md §15); raises :class:`TokenRefused` when the server
        no longer accepts it."""
        try:
            self._login(Authenticate(user=user, token=token), timeout, None)
        except TokenRefused:
            raise
        except AuthFailed as exc:  # refused, or throttled: either way the token is no use
            raise TokenRefused(f"the server refused the session token ({exc})") from None

    def _login(self, auth: Authenticate, timeout: float,
               on_notice: Callable[[Notice], None] | None) -> None:
        self.send(auth)
        event = self._next_significant(timeout, "the login reply", on_notice)
        if isinstance(event, AuthResult):
            if event.ok:
                self.user = event.user or auth.user
                self.session_token = event.token
                return
            if auth.token is not None:
                raise TokenRefused("the server no longer accepts this session's token: it "
                                   "expired, or the password was changed, or the user was "
                                   "disabled")
            # The same sentence whatever was wrong: the server does not say
            # whether the user exists, and neither do we.
            raise AuthFailed("authentication failed: wrong user name or password")
        if isinstance(event, ConnectionClosed | Bye) and self.version == 1:
            # The original server just closes on a rejected user name.
            raise AuthFailed("authentication failed: wrong user name or password")
        raise self._unexpected(event, "the login reply")

    def _next_significant(self, timeout: float, what: str,
                          on_notice: Callable[[Notice], None] | None) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.poll(max(0.0, deadline - time.monotonic()))
            if event is None:
                raise ConnectionLost(f"no reply from {self.address} while waiting for {what}")
            if isinstance(event, Notice):
                if on_notice is not None:
                    on_notice(event)
                continue
            if isinstance(event, Pong):
                # Legal from the server before login too (docs/PROTOCOL.md §5),
                # and never an answer to what we wait for.
                continue
            return event

    def _unexpected(self, event: Event, what: str) -> Exception:
        if isinstance(event, Error):
            return server_error(event)
        if isinstance(event, ConnectionClosed | Bye):
            return ConnectionLost(f"the server closed the connection while we waited for {what}")
        return ConnectionLost(f"unexpected {frame_name(event)} from the server instead of {what}")

    @property
    def encrypted(self) -> bool:
        return isinstance(self._sock, TLSSocket)

    @property
    def loopback(self) -> bool:
        """The server is on this machine (127.0.0.0/8, ::1)."""
        try:
            peer = self._sock.getpeername()
            host = peer[0] if isinstance(peer, tuple) else str(peer)
            ip = ipaddress.ip_address(host.split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                return ip.ipv4_mapped.is_loopback
            return ip.is_loopback
        except (OSError, ValueError):
            return False

    # -- chatting --------------------------------------------------------------
    @property
    def model(self) -> str:
        """The server's default model (v2; ``""`` when it did not say)."""
        return self.hello.model if self.hello is not None else ""

    @property
    def models(self) -> tuple[str, ...]:
        """The models a message may name (v2 HELLO), the default first; a server
        that lists none offers only its default."""
        if self.hello is None:
            return ()
        return self.hello.models or ((self.hello.model,) if self.hello.model else ())

    @property
    def can_cancel(self) -> bool:
        return self.version >= 2

    def send_message(self, text: str, conversation: str = "", model: str = "") -> int:
        """Send a chat message; returns its message id (1, 2, … as the v1 codec numbers).
        ``model``: one of :attr:`models` (``""``: the conversation's, or the default)."""
        self._next_id += 1
        # v1 cannot carry a conversation id or a model; the original server has neither.
        conv, chosen = (conversation, model) if self.version >= 2 else ("", "")
        self.send(ChatMessage(text=text, conversation=conv, message_id=self._next_id,
                              model=chosen))
        return self._next_id

    def cancel(self, message_id: int) -> bool:
        """Ask the server to stop an answer (v2). False when the protocol can't."""
        if not self.can_cancel:
            return False
        self.send(Cancel(message_id=message_id))
        return True

    def send(self, event: Event) -> None:
        """Encode and write ``event``. Raises :class:`ConnectionLost` on a dead socket."""
        with self._lock:
            try:
                data = self._conn.send(event)
            except LocalProtocolError:
                if self._conn.state in (State.CLOSED, State.ERROR) or self._eof.is_set():
                    # The server said its last word (or broke off) before we
                    # noticed: nothing was written.
                    raise ConnectionLost(
                        f"the server closed the connection ({self.address})") from None
                raise
            try:
                if data:
                    self._sock.sendall(data)
            except OSError as exc:
                raise ConnectionLost(self._lost_reason(exc)) from None

    def poll(self, timeout: float | None) -> Event | None:
        """The next event, or ``None`` after ``timeout`` seconds without one.

        Raises :class:`ConnectionLost` once the socket failed or the server broke
        the protocol (again on every later call). ``ConnectionClosed`` is
        returned as an event: after our ``Bye`` it is the expected ending.
        """
        if self._failure is not None and self._events.empty():
            raise self._failure
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, ConnectionLost):
            self._failure = item
            raise item
        return item

    @property
    def eof(self) -> bool:
        """True once the reader thread has stopped (the connection is gone)."""
        return self._eof.is_set()

    # -- closing ---------------------------------------------------------------
    def close(self, *, bye: bool = True, timeout: float = 2.0) -> None:
        """Say goodbye (when the connection still works), then close the socket."""
        if bye and not self._eof.is_set() and self._failure is None:
            try:
                self.send(Bye(reason="client quit"))
            except Exception:  # already broken: nothing left to say goodbye to
                pass
            else:
                self._await_goodbye(timeout)
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=1.0)

    def _await_goodbye(self, timeout: float) -> None:
        # Wait briefly for the server's Bye or its EOF so the server sees an
        # orderly close instead of a reset.
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.poll(left)
            except ConnectionLost:
                return
            if event is None or isinstance(event, Bye | ConnectionClosed):
                return

    # -- the reader thread -------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError as exc:
                    if not self._closing:
                        self._events.put(ConnectionLost(self._lost_reason(exc)))
                    return
                if self._feed(data) or not data:
                    return
        finally:
            self._eof.set()
            if self.on_closed is not None and not self._closing:
                self.on_closed()

    def _feed(self, data: bytes) -> bool:
        """Feed bytes to the codec and queue the events; True when done reading."""
        with self._lock:
            self._conn.receive_data(data)
            while True:
                try:
                    event = self._conn.next_event()
                except RemoteProtocolError as exc:
                    with contextlib.suppress(OSError):
                        self._sock.sendall(self._conn.error_reply(exc))
                    if not self._closing:
                        if not data:
                            reason = "the server closed the connection in the middle of a frame"
                        else:
                            reason = f"the server broke the protocol: {exc}"
                        self._events.put(ConnectionLost(reason))
                    return True
                out = self._conn.data_to_send()
                try:
                    if out:
                        self._sock.sendall(out)
                    if isinstance(event, Ping):
                        self._sock.sendall(self._conn.send(Pong(nonce=event.nonce)))
                        continue
                except OSError as exc:
                    if not self._closing:
                        self._events.put(ConnectionLost(self._lost_reason(exc)))
                    return True
                if event is NEED_DATA:
                    return False
                self._events.put(event)  # type: ignore[arg-type]  # NEED_DATA returned above
                if isinstance(event, ConnectionClosed):
                    return True

    def _lost_reason(self, exc: OSError) -> str:
        if isinstance(exc, ConnectionResetError | BrokenPipeError):
            return f"connection to {self.address} lost: the server reset the connection"
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"connection to {self.address} lost: {reason}"
