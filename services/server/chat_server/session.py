"""
chat_server.session
~~~~~~~~~~~~~~~~~~~

One client connection, from the first byte to the close. The protocol version
is whatever the codec detects (v1 and v2 share one port); this module only
speaks events, so both versions get the same authentication, limits and
moderation. The chat pipeline for one message is in :mod:`chat_server.turn`.

Lifecycle: handshake (v2 HELLO) → authentication (under ``auth_timeout``) →
chat loop. Answers run in a worker task so the loop keeps reading: a v2
CANCEL, PING or BYE is handled while an answer streams, and an EOF mid-answer
aborts the upstream request.

Timers of the chat loop (docs/PROTOCOL.md §6):

* **idle**: no CHAT or CANCEL for ``idle_timeout`` while no answer is in
  flight closes the session (``idle_timeout``). PING and PONG are keepalive
  traffic and don't count as activity.
* **keepalive** (v2): after ``ping_interval`` without a frame in either
  direction the server sends PING; if no frame at all arrives within
  ``ping_timeout`` of it, the peer is gone and the session is closed
  (``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from typing import Protocol

from chatcore.protocol import (
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
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    ServerHello,
    State,
    frame_name,
)

from . import __version__, metrics
from .auth import Authenticator
from .config import Settings
from .health import HEALTHCHECK_AGENT
from .logs import SessionLogger, name_hash
from .metrics import LoginFailure, Outcome, Reason
from .moderation import to_v1_answer_text, to_v2_answer_text
from .peer import client_address
from .stop import StopReason
from .turn import ChatTurn, TurnContext, TurnServices
from .wire import Ended, FrameTimeout, PeerGone, Wire

log = logging.getLogger("chat_server.session")

AUTH_FAILED = "invalid username or password"


class SessionServices(TurnServices, Protocol):
    """What a session needs from the server (implemented by ``ChatService``)."""

    settings: Settings
    auth: Authenticator

    async def check_rate(self, user: str) -> float:
        """0.0: the message may go (and is counted); else seconds to wait
        (CHAT_RATE_LIMIT, across every replica on PostgreSQL)."""

    @property
    def shutting_down(self) -> bool: ...

    @property
    def model_ready(self) -> bool: ...


class SessionEnded(Exception):
    """Raised inside the session to stop it; the reply (if any) was sent."""


class Session:
    # One per connection: no instance dict (docs/BENCHMARKS.md, idle connections).
    __slots__ = (
        "_default_conversation", "_ended_by_server", "_last_activity", "_leaving", "_ping_sent",
        "_tokens",
        "_worker", "address", "conn", "id", "log", "password_generation", "services", "settings",
        "tls", "turns", "user", "wire",
    )

    def __init__(
        self,
        services: SessionServices,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool = False,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.id = uuid.uuid4().hex[:12]
        #: The client's address (the one a trusted balancer named, if any).
        self.address = client_address(writer)
        #: TLS carries v2 only (v1 is plaintext only: docs/PROTOCOL.md §13).
        self.tls = tls
        self.conn = Connection(
            Role.SERVER,
            version=2 if tls else None,
            max_frame_size=self.settings.max_frame_bytes,
        )
        self.wire = Wire(reader, writer, self.conn, frame_deadline=self.settings.frame_timeout)
        self.log = SessionLogger(log, self.id, peer=self.address)
        self.user: str | None = None
        #: The user's password generation at login (chat_server.accounts ends
        #: the session when the password changes).
        self.password_generation = 0
        #: The conversation v1 messages (and v2 messages without one) belong
        #: to: made by the first such message (an idle session holds none).
        self._default_conversation: str | None = None
        #: Turns not finished yet, oldest first; the first one is running. A
        #: turn is here from the moment its CHAT arrived, so a CANCEL finds it
        #: even before its answer started. (A list: it is almost always empty,
        #: and an empty deque costs ~760 bytes on each of thousands of idle sessions.)
        self.turns: list[ChatTurn] = []
        self._worker: asyncio.Task[None] | None = None
        #: When the user last did something (CHAT, CANCEL, an answer ending).
        self._last_activity = time.monotonic()
        #: Why the server ended the session itself (revoke), for the log.
        self._ended_by_server: str | None = None
        #: The session tokens this login used and was given (v2): a BYE ends them.
        self._tokens: tuple[str, ...] = ()
        #: When our keepalive PING went out, while its answer is awaited.
        self._ping_sent: float | None = None
        #: The client said BYE: the chat loop answers it and closes.
        self._leaving = False

    @property
    def default_conversation(self) -> str:
        """The conversation v1 messages (and v2 messages without one) belong to."""
        if self._default_conversation is None:
            self._default_conversation = uuid.uuid4().hex
        return self._default_conversation

    @property
    def answering(self) -> bool:
        """An answer of this session is queued or being generated."""
        return self._worker is not None and not self._worker.done()

    @property
    def answers(self) -> asyncio.Task[None] | None:
        """The task working through this session's answers, while it runs."""
        return self._worker if self.answering else None

    # ------------------------------------------------------------------ main
    async def run(self, *, connected_at: float | None = None) -> None:
        """The session, to its end. ``connected_at`` (the event loop's clock):
        when the connection was accepted; the login deadline counts from then
        (docs/PROTOCOL.md §4 ``auth_timeout_ms``), not from the first byte."""
        reason = "closed"
        try:
            await self._authenticate(connected_at)
            await self._chat_loop()
            reason = "bye"
        except SessionEnded as exc:
            reason = str(exc) or "ended"
        except PeerGone as exc:
            reason = f"peer gone ({exc})"
        except Ended:
            reason = "ended by the server"
        except RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.log.warning("protocol error from peer: %s", exc, event="protocol_error")
            await self._reply_bytes(self.conn.error_reply(exc))
        except FrameTimeout:
            reason = "frame timeout"
            self.log.warning("frame not completed in time (slow sender)", event="frame_timeout")
            await self._send_error(ErrorCode.PROTOCOL_ERROR, "frame not completed in time")
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        except Exception:  # a bug: log it, tell the peer generically, keep the server up
            reason = "internal error"
            self.log.error("internal error in session", event="internal_error", exc_info=True)
            await self._send_error(ErrorCode.INTERNAL_ERROR, "internal server error")
        finally:
            await self._stop_worker(StopReason.DISCONNECTED)
            # Our last frame (BYE, a fatal ERROR) must not be lost to a reset.
            await self.wire.close_lingering()
            reason = self._ended_by_server or reason
            metrics.connection_closed(self.id)
            self.log.info("connection closed: %s", reason, event="disconnect")

    async def _reply_bytes(self, data: bytes) -> None:
        with contextlib.suppress(PeerGone):
            if data:
                await self.wire.write(data)

    async def _send_error(self, code: ErrorCode, message: str, message_id: int | None = None) -> None:
        """Best-effort error to the peer (it may already be gone)."""
        if self.conn.state is State.ERROR or self.wire.closed or self.wire.ended:
            return
        with contextlib.suppress(PeerGone, LocalProtocolError):
            await self.wire.send(Error(code, message, message_id))

    async def send(self, event: Event) -> None:
        """Send an event; :exc:`PeerGone` if the connection is already closed."""
        if self.wire.closed or self.wire.ended or self.conn.state is State.ERROR:
            raise PeerGone("connection closed")
        await self.wire.send(event)

    # ------------------------------------------------------------------ control (for the server)
    def stop_answers(self, reason: StopReason) -> None:
        """Stop every answer of this session; each stores what it has."""
        for turn in self.turns:
            turn.stop(reason)

    def abort(self) -> None:
        """Drop the connection now (last resort at shutdown): the session ends."""
        self.wire.abort()

    async def revoke(self, reason: StopReason) -> None:
        """The user's account was disabled or removed, or their password
        changed (chat_server.accounts; ``reason`` says which): stop the answers
        (each stores what it has; one in flight ends with ERROR session_revoked
        carrying its id), send ERROR session_revoked (fatal; unless the
        answer's already was the end) and end the connection: :meth:`run`
        stops reading and closes it lingering, so the ERROR is not lost to a
        reset while the client is still sending (docs/SECURITY.md)."""
        message = reason.revocation
        if message is None:
            raise ValueError(f"{reason} does not end a session")
        self._ended_by_server = reason.value
        await self._stop_worker(reason)
        await self._send_error(ErrorCode.SESSION_REVOKED, message)
        self.wire.end()

    async def shutdown(self, message: str) -> None:
        """Server shutdown after answers in flight are done: tell the peer
        (ERROR shutting_down, once logged in), end the connection; :meth:`run`
        closes it lingering (bounded by ``wire.LINGER_SECONDS``, in each
        session's own task, so many sessions drain at once)."""
        if self._ended_by_server is None:
            self._ended_by_server = "server shutdown"
        if self.user is not None and self.conn.state is State.CHATTING:
            await self._send_error(ErrorCode.SHUTTING_DOWN, message)
        self.wire.end()

    # ------------------------------------------------------------------ auth
    async def _authenticate(self, connected_at: float | None) -> None:
        settings = self.settings
        if connected_at is None:
            connected_at = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout_at(connected_at + settings.auth_timeout):
                opened = False
                while True:
                    event = await self.wire.next_event(idle_timeout=None)
                    if isinstance(event, ClientHello) and event.agent == HEALTHCHECK_AGENT:
                        self.log.quiet = True  # container healthchecks every few seconds
                    if not opened:
                        # Logged once the first frame shows who is calling.
                        opened = True
                        metrics.connection_opened(self.id, metrics.Protocol.of(self.conn.version),
                                                  metrics.Transport.TLS if self.tls else metrics.Transport.PLAIN)
                        self.log.info("connection opened (protocol v%s%s)", self.conn.version,
                                      " over TLS" if self.tls else "", event="connect", tls=self.tls)
                    if isinstance(event, ClientHello):
                        await self._hello()
                    elif isinstance(event, Authenticate):
                        if await self._check_credentials(event):
                            return
                        raise SessionEnded("authentication failed")
                    elif isinstance(event, Ping):
                        await self.send(Pong(event.nonce))
                    elif isinstance(event, Error) and not event.fatal:
                        self._peer_error(event)
                    elif isinstance(event, Bye):
                        # Answered as in any other state (docs/PROTOCOL.md §4).
                        await self._say_goodbye()
                        raise SessionEnded("left before authenticating")
                    elif isinstance(event, (ConnectionClosed, Error)):
                        raise SessionEnded("left before authenticating")
                    else:
                        # Pong and anything the state table allows but a
                        # login can't use: ignored.
                        continue
        except TimeoutError:
            self.log.info("authentication timed out", event="auth_timeout")
            await self._send_error(ErrorCode.AUTH_TIMEOUT, "authentication timed out")
            raise SessionEnded("auth timeout") from None

    async def _hello(self) -> None:
        # A HELLO without version 2 never gets here: the codec answers it
        # with ERROR unsupported_version (a RemoteProtocolError in run()).
        s = self.settings
        await self.send(
            ServerHello(
                version=2,
                agent=f"chat-server/{__version__}",
                model=s.model,
                models=s.allowed_models(),
                limits={
                    # Both frame limits: the HELLO is sent before login, when
                    # the smaller one applies (docs/PROTOCOL.md §4).
                    "max_frame_bytes": self.conn.max_frame_size,
                    "max_unauthenticated_frame_bytes": self.conn.max_unauthenticated_frame_size,
                    "auth_timeout_ms": int(s.auth_timeout * 1000),
                    "idle_timeout_ms": int(s.idle_timeout * 1000),
                    "ping_timeout_ms": int(s.ping_timeout * 1000),
                    "messages_per_minute": s.rate_limit,
                    "model_ready": int(self.services.model_ready),
                },
            )
        )

    async def _check_credentials(self, auth: Authenticate) -> bool:
        services = self.services
        wait = await services.auth.wait_for(auth.user, self.address)
        if wait > 0:
            metrics.login_failed(LoginFailure.THROTTLED)
            # The name only as a keyed hash: it may be a password typed into
            # the user-name field (the authenticator logs more once it knows
            # whether the account exists).
            self.log.warning("login throttled for %.0fs", wait, event="auth_throttled",
                             user_hash=name_hash(auth.user))
            await self._send_error(
                ErrorCode.AUTH_THROTTLED, f"too many failed attempts; try again in {wait:.0f} s"
            )
            return False
        if auth.token is not None:  # v2 only: the v1 codec cannot carry one
            verified = await services.auth.verify_token(auth.user, auth.token, self.address)
        else:
            assert auth.password is not None
            verified = await services.auth.verify(auth.user, auth.password, self.address)
        if verified is None:
            metrics.login_failed(LoginFailure.INVALID)
            self.log.warning("authentication failed", event="auth_failed",
                             user_hash=name_hash(auth.user))
            with contextlib.suppress(PeerGone):
                await self.send(AuthResult(ok=False, message=AUTH_FAILED))
            return False
        self.user = auth.user
        self.password_generation = verified.generation
        metrics.login_succeeded(self.id, auth.user)
        self.log = self.log.bind(user=auth.user)
        # A fresh session token for every v2 login (docs/PROTOCOL.md §15); v1
        # has no way to carry one.
        token = (await services.auth.issue_token(auth.user, follows=auth.token)
                 if self.conn.version == 2 else None)
        self._tokens = tuple(t for t in (auth.token, token) if t is not None)
        await self.send(AuthResult(ok=True, user=auth.user, message="welcome", token=token))
        self.log.info("authenticated", event="auth_ok",
                      method="token" if auth.token is not None else "password")
        return True

    async def _say_goodbye(self) -> None:
        """Answer the client's BYE with ours (it may be gone already)."""
        with contextlib.suppress(PeerGone, LocalProtocolError):
            await self.send(Bye("goodbye"))

    def _peer_error(self, event: Error) -> None:
        # A client's non-fatal ERROR (say, it could not render something)
        # is noted and the session goes on (docs/PROTOCOL.md §5).
        self.log.info("client reported an error: %s", event.code.value, event="peer_error",
                      code=event.code.value, message_id=event.message_id)

    # ------------------------------------------------------------------ chat
    def _quiet_deadline(self) -> float:
        """When the chat loop must look at its timers next (monotonic)."""
        s = self.settings
        if self._ping_sent is not None:
            deadline = self._ping_sent + s.ping_timeout
        elif self.conn.version == 2 and s.ping_interval > 0:
            deadline = self.wire.last_traffic + s.ping_interval
        else:
            deadline = float("inf")
        # While an answer is in flight the user is waiting, not idle: look
        # again after a while (the answer's end counts as activity).
        idle_from = time.monotonic() if self.answering else self._last_activity
        return min(deadline, idle_from + s.idle_timeout)

    async def _on_quiet(self) -> None:
        """Nothing arrived before the deadline: ping, or close, or go on waiting."""
        s = self.settings
        now = time.monotonic()
        if self._ping_sent is not None and now >= self._ping_sent + s.ping_timeout:
            self.log.info("no answer to PING within %gs", s.ping_timeout, event="ping_timeout")
            await self._send_error(ErrorCode.IDLE_TIMEOUT,
                                   f"no answer to PING within {s.ping_timeout:g} s")
            raise SessionEnded("keepalive timeout")
        if not self.answering and now >= self._last_activity + s.idle_timeout:
            self.log.info("idle timeout", event="idle_timeout")
            await self._send_error(ErrorCode.IDLE_TIMEOUT, "closing idle connection")
            raise SessionEnded("idle timeout")
        if (self._ping_sent is None and self.conn.version == 2 and s.ping_interval > 0
                and now >= self.wire.last_traffic + s.ping_interval):
            await self.send(Ping(secrets.token_hex(4)))
            self._ping_sent = now

    async def _chat_loop(self) -> None:
        while True:
            timeout = max(0.0, self._quiet_deadline() - time.monotonic())
            try:
                event = await self.wire.next_event(idle_timeout=timeout)
            except TimeoutError:
                await self._on_quiet()
                continue
            self._ping_sent = None  # any frame shows the peer is there
            if isinstance(event, ChatMessage):
                self._last_activity = time.monotonic()
                if self.conn.version == 1:
                    await self._v1_wait_for_answer()
                    if self.wire.ended:  # revoked or stopping meanwhile: not taken
                        raise Ended("ended by the server")
                await self._on_message(event)
            elif isinstance(event, Cancel):
                self._last_activity = time.monotonic()
                for turn in self.turns:
                    if turn.id == event.message_id:
                        turn.stop(StopReason.CANCELLED)
            elif isinstance(event, Ping):
                await self.send(Pong(event.nonce))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, Error) and not event.fatal:
                self._peer_error(event)
            elif isinstance(event, Bye):
                # The answer in flight stops (it stores what it has); the
                # worker must not close the connection as it ends: our BYE
                # comes first (docs/PROTOCOL.md §4).
                self._leaving = True
                await self._stop_worker(StopReason.CLIENT_BYE)
                # A BYE logs out: the tokens end before the goodbye is sent
                # (a lost connection keeps them, to resume with).
                if self._tokens and self.user is not None:
                    await self.services.auth.log_out(self.user, self._tokens)
                    self._tokens = ()
                await self._say_goodbye()
                return
            elif isinstance(event, ConnectionClosed):
                raise SessionEnded("peer closed the connection")
            elif isinstance(event, Error):
                self.log.info("client closed with %s", event.code.value, event="peer_error",
                              code=event.code.value)
                raise SessionEnded(f"client error {event.code.value}")
            else:  # the state table lets nothing else through
                raise AssertionError(f"unhandled {frame_name(event)}")
            if self.conn.state is State.CLOSED:
                raise SessionEnded("closed by the protocol")

    async def _v1_wait_for_answer(self) -> None:
        """v1 has no message ids: the replies to a client's messages (answers,
        and errors such as rate_limited) must come in the order of the
        messages. So a v1 message read while an answer is in flight waits for
        it here, and nothing behind it is read meanwhile: a client that
        pipelines waits in TCP, not in our memory (docs/PROTOCOL.md §9)."""
        while self._worker is not None and self.answering:
            timeout = max(0.0, self._quiet_deadline() - time.monotonic())
            await asyncio.wait({self._worker}, timeout=timeout)
            if self.answering:
                await self._on_quiet()

    async def _on_message(self, message: ChatMessage) -> None:
        services = self.services
        assert self.user is not None
        metrics.message_received(self.id)
        # v2: one answer in flight per session, always (a client that sends
        # again before the END is told so, also while the server shuts down);
        # across a user's sessions the answers queue instead (the user line in
        # ChatTurn). v1: the chat loop reads a message only once the answer
        # before it has ended, so the messages are answered in order.
        if self.conn.version != 1 and self.answering:
            metrics.message_outcome(Outcome.BUSY, session=self.id)
            await self._send_error(
                ErrorCode.BUSY, "an answer is already in progress; wait for it or cancel it",
                message.message_id,
            )
            return
        if services.shutting_down and not self.answering:
            # (With an answer in flight, v2 got busy above, and a v1 message
            # is not read yet: that answer still finishes in the grace period,
            # and then the session is told to reconnect.)
            metrics.message_outcome(Outcome.INTERRUPTED, Reason.SHUTDOWN, session=self.id)
            await self._send_error(ErrorCode.SHUTTING_DOWN, "the server is restarting; try again shortly",
                                   message.message_id)
            raise SessionEnded("shutting down")
        # After the busy check: a message refused as busy was not taken, so it
        # does not count towards the rate limit (docs/PROTOCOL.md §6).
        wait = await services.check_rate(self.user)
        if wait > 0:
            metrics.message_outcome(Outcome.RATE_LIMITED, session=self.id)
            self.log.info("rate limited", event="rate_limited")
            await self._send_error(
                ErrorCode.RATE_LIMITED,
                f"too many messages; try again in {wait:.0f} s",
                message.message_id,
            )
            return
        ctx = TurnContext(
            user=self.user,
            default_conversation=self.default_conversation,
            send=self.send,
            log=self.log,
            services=services,
            to_client_text=to_v1_answer_text if self.conn.version == 1 else to_v2_answer_text,
        )
        self.turns.append(ChatTurn(ctx, message))
        if not self.answering:
            self._worker = asyncio.create_task(self._work(), name=f"answers-{self.id}")

    async def _work(self) -> None:
        while self.turns:
            turn = self.turns[0]
            try:
                await turn.run()
            finally:
                with contextlib.suppress(ValueError):
                    self.turns.remove(turn)
                self._last_activity = time.monotonic()
            if self.conn.state is State.CLOSED and not self._leaving:
                # v1 moderation: the codec has closed the session (warning + <GoodBye>).
                # (Not the client's BYE: the chat loop answers it, then closes.)
                # The chat loop stops reading and closes lingering, so those
                # last words are not lost to a reset (docs/SECURITY.md).
                self.turns.clear()
                self.wire.end()
                return

    async def _stop_worker(self, reason: StopReason) -> None:
        self.stop_answers(reason)
        worker = self._worker
        if worker is not None and not worker.done():
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(worker)
            except (TimeoutError, Exception):
                worker.cancel()
                with contextlib.suppress(BaseException):
                    await worker
        self.turns.clear()
