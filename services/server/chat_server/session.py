"""
chat_server.session
~~~~~~~~~~~~~~~~~~~

One client connection, from the first byte to the close. The protocol version
is whatever the codec detects (v1 and v2 share one port); this module only
speaks events, so both versions get the same authentication, limits and
moderation. The chat pipeline for one message is in :mod:`chat_server.turn`.

Lifecycle: handshake (v2 HELLO) → authentication (under ``auth_timeout``) →
chat loop (under ``idle_timeout`` between frames). Answers run in a worker task
so the loop keeps reading: a v2 CANCEL, PING or BYE is handled while an answer
streams, and an EOF mid-answer aborts the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING

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
)

from . import __version__
from .turn import Turn
from .wire import FrameTimeout, PeerGone, Wire

if TYPE_CHECKING:
    from .app import ChatService

log = logging.getLogger("chat_server.session")

AUTH_FAILED = "invalid username or password"
#: The agent string of `chat-server healthcheck` (its sessions are logged at debug).
HEALTHCHECK_AGENT = "chat-server-healthcheck"


class SessionEnded(Exception):
    """Raised inside the session to stop it; the reply (if any) was sent."""


class Session:
    def __init__(
        self,
        service: ChatService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.id = uuid.uuid4().hex[:12]
        peer = writer.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer or "?")
        self.conn = Connection(
            Role.SERVER,
            max_frame_size=self.settings.max_frame_bytes,
        )
        self.wire = Wire(reader, writer, self.conn, frame_deadline=self.settings.frame_timeout)
        self.user: str | None = None
        #: The conversation v1 messages (and v2 messages without one) belong to.
        self.default_conversation = uuid.uuid4().hex
        #: Messages waiting for the worker (a list: it is almost always empty,
        #: and an empty deque costs ~760 bytes on each of thousands of idle sessions).
        self.queue: list[ChatMessage] = []
        self.worker: asyncio.Task[None] | None = None
        self.current: Turn | None = None
        self.quiet = False  # healthchecks are logged at debug only

    @property
    def answering(self) -> bool:
        """An answer of this session is queued or being generated."""
        return self.worker is not None and not self.worker.done()

    # ------------------------------------------------------------------ logging
    def log(self, level: int, msg: str, *args: object, **fields: object) -> None:
        if self.quiet and level < logging.WARNING:
            level = logging.DEBUG
        if not log.isEnabledFor(level):
            return
        extra = {"session": self.id, "peer": self.address, **fields}
        if self.user:
            extra["user"] = self.user
        log.log(level, msg, *args, extra=extra)

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        reason = "closed"
        try:
            await self._authenticate()
            await self._chat_loop()
            reason = "bye"
        except SessionEnded as exc:
            reason = str(exc) or "ended"
        except PeerGone as exc:
            reason = f"peer gone ({exc})"
        except RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.log(logging.WARNING, "protocol error from peer: %s", exc, event="protocol_error")
            await self._reply_bytes(self.conn.error_reply(exc))
        except FrameTimeout:
            reason = "frame timeout"
            self.log(logging.WARNING, "frame not completed in time (slow sender)", event="frame_timeout")
            await self._send_error(ErrorCode.PROTOCOL_ERROR, "frame not completed in time")
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        except Exception:  # a bug: log it, tell the peer generically, keep the server up
            reason = "internal error"
            self.log(logging.ERROR, "internal error in session", event="internal_error", exc_info=True)
            await self._send_error(ErrorCode.INTERNAL_ERROR, "internal server error")
        finally:
            await self._stop_worker()
            await self.wire.close()
            self.log(logging.INFO, "connection closed: %s", reason, event="disconnect")

    async def _reply_bytes(self, data: bytes) -> None:
        with contextlib.suppress(PeerGone):
            if data:
                await self.wire.write(data)

    async def _send_error(self, code: ErrorCode, message: str, message_id: int | None = None) -> None:
        """Best-effort error to the peer (it may already be gone)."""
        if self.conn.state is State.ERROR or self.wire.closed:
            return
        with contextlib.suppress(PeerGone, LocalProtocolError):
            await self.wire.send(Error(code, message, message_id))

    async def send(self, event: Event) -> None:
        """Send an event; :exc:`PeerGone` if the connection is already closed."""
        if self.wire.closed or self.conn.state is State.ERROR:
            raise PeerGone("connection closed")
        await self.wire.send(event)

    # ------------------------------------------------------------------ auth
    async def _authenticate(self) -> None:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.auth_timeout):
                opened = False
                while True:
                    event = await self.wire.next_event(idle_timeout=None)
                    if isinstance(event, ClientHello) and event.agent == HEALTHCHECK_AGENT:
                        self.quiet = True  # container healthchecks every few seconds
                    if not opened:
                        # Logged once the first frame shows who is calling.
                        opened = True
                        self.log(logging.INFO, "connection opened (protocol v%s)", self.conn.version,
                                 event="connect")
                    if isinstance(event, ClientHello):
                        await self._hello()
                    elif isinstance(event, Authenticate):
                        if await self._check_credentials(event):
                            return
                        raise SessionEnded("authentication failed")
                    elif isinstance(event, Ping):
                        await self.send(Pong(event.nonce))
                    elif isinstance(event, (Bye, ConnectionClosed)):
                        raise SessionEnded("left before authenticating")
                    else:
                        await self._send_error(
                            ErrorCode.UNEXPECTED_FRAME, "authenticate first"
                        )
                        raise SessionEnded("unexpected frame before authentication")
        except TimeoutError:
            self.log(logging.INFO, "authentication timed out", event="auth_timeout")
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
                model=s.ollama_model,
                limits={
                    "max_frame_bytes": s.max_frame_bytes,
                    "auth_timeout_ms": int(s.auth_timeout * 1000),
                    "idle_timeout_ms": int(s.idle_timeout * 1000),
                    "messages_per_minute": s.rate_limit,
                    "model_ready": int(self.service.model.ready),
                },
            )
        )

    async def _check_credentials(self, auth: Authenticate) -> bool:
        service = self.service
        wait = service.auth.is_throttled(auth.user, self.address)
        if wait > 0:
            self.log(logging.WARNING, "login throttled for %.0fs", wait, event="auth_throttled",
                     attempted_user=auth.user[:64])
            await self._send_error(
                ErrorCode.AUTH_THROTTLED, f"too many failed attempts; try again in {wait:.0f} s"
            )
            return False
        ok = await service.auth.verify(auth.user, auth.password, self.address)
        if not ok:
            self.log(logging.WARNING, "authentication failed", event="auth_failed",
                     attempted_user=auth.user[:64])
            with contextlib.suppress(PeerGone):
                await self.send(AuthResult(ok=False, message=AUTH_FAILED))
            return False
        self.user = auth.user
        await self.send(AuthResult(ok=True, user=auth.user, message="welcome"))
        self.log(logging.INFO, "authenticated", event="auth_ok")
        return True

    # ------------------------------------------------------------------ chat
    async def _chat_loop(self) -> None:
        settings = self.settings
        while True:
            try:
                # While an answer is in flight the user is waiting, not idle.
                event = await self.wire.next_event(
                    idle_timeout=None if self.answering else settings.idle_timeout)
            except TimeoutError:
                if self.answering:
                    continue
                self.log(logging.INFO, "idle timeout", event="idle_timeout")
                await self._send_error(ErrorCode.IDLE_TIMEOUT, "closing idle connection")
                raise SessionEnded("idle timeout") from None
            if isinstance(event, ChatMessage):
                await self._on_message(event)
            elif isinstance(event, Cancel):
                if self.current is not None and self.current.message.message_id == event.message_id:
                    self.current.cancel("cancelled by the user")
            elif isinstance(event, Ping):
                await self.send(Pong(event.nonce))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, Bye):
                await self._stop_worker(reason="client said bye")
                with contextlib.suppress(PeerGone, LocalProtocolError):
                    await self.send(Bye("goodbye"))
                return
            elif isinstance(event, ConnectionClosed):
                raise SessionEnded("peer closed the connection")
            else:
                await self._send_error(ErrorCode.UNEXPECTED_FRAME, f"unexpected {type(event).__name__}")
                raise SessionEnded("unexpected frame")
            if self.conn.state is State.CLOSED:
                raise SessionEnded("closed by the protocol")

    async def _on_message(self, message: ChatMessage) -> None:
        service = self.service
        assert self.user is not None
        if service.shutting_down:
            await self._send_error(ErrorCode.SHUTTING_DOWN, "the server is restarting; try again shortly",
                                   message.message_id)
            raise SessionEnded("shutting down")
        wait = service.rate.check(self.user)
        if wait > 0:
            self.log(logging.INFO, "rate limited", event="rate_limited")
            await self._send_error(
                ErrorCode.RATE_LIMITED,
                f"too many messages; try again in {wait:.0f} s",
                message.message_id,
            )
            return
        # v2: one answer in flight per session (a client that sends again before
        # the END is told so); across a user's sessions the answers queue
        # instead (Turn.run waits for the user's lock). v1: the original client
        # waits for each answer, so its queue only fills if a client pipelines,
        # and the messages are answered in order.
        if self.conn.version != 1 and self.answering:
            await self._send_error(
                ErrorCode.BUSY, "an answer is already in progress; wait for it or cancel it",
                message.message_id,
            )
            return
        self.queue.append(message)
        if not self.answering:
            self.worker = asyncio.create_task(self._work(), name=f"answers-{self.id}")

    async def _work(self) -> None:
        while self.queue:
            message = self.queue.pop(0)
            turn = Turn(self, message)
            self.current = turn
            try:
                keep_open = await turn.run()
            finally:
                self.current = None
            if not keep_open:
                # v1 moderation: the codec has closed the session (warning + <GoodBye>).
                await self.wire.close()
                return

    async def _stop_worker(self, reason: str = "connection closed") -> None:
        if self.current is not None:
            self.current.cancel(reason)
        self.queue.clear()
        if self.worker is not None and not self.worker.done():
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self.worker)
            except (TimeoutError, Exception):
                self.worker.cancel()
                with contextlib.suppress(BaseException):
                    await self.worker

    async def shutdown(self, message: str) -> None:
        """Server shutdown after answers in flight are done: tell the peer, close."""
        if self.user is not None and self.conn.state is State.CHATTING:
            await self._send_error(ErrorCode.SHUTTING_DOWN, message)
        await self.wire.close()
