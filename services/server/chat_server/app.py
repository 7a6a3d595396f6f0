"""
chat_server.app
~~~~~~~~~~~~~~~

The listener and the shared services every session uses (store, authenticator,
backend pool (routing, fair scheduler), rate limiter, banned words), plus the process
lifecycle: backend probes and model pulls, connection limit, graceful shutdown on
SIGTERM/SIGINT (stop accepting, let answers in flight finish up to
``CHAT_SHUTDOWN_GRACE`` seconds, store them, close, exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager

import sniffio
from chatcore.privacy import detector_for
from chatcore.protocol import ErrorCode, NoticeKind

from . import __version__, admin, metrics, readiness
from .accounts import AccountWatch, Login
from .admission import (
    SNIFF_SECONDS,
    Admission,
    Limit,
    Ticket,
    Turnaway,
    configure_socket,
    turn_away,
)
from .auth import Authenticator
from .backends import BackendHealth, BackendPool, ModelChunk, ModelState
from .bootstrap import InitialPasswordCheck, ensure_first_user, initial_password_path
from .config import Settings
from .coordination import Coordination, CoordinationError, LocalCoordination, open_coordination
from .gate import Gate
from .gate import start_server as start_gated_server
from .history_cache import Conversation, ConversationCache
from .logs import LogSampler
from .memory import freeze_startup_objects
from .moderation.answer_filter import AnswerFilter
from .moderation.banned_words import WatchedBannedWords
from .moderation.worker import BANNED_WORD, DetectionWorker, SteppedAnswerFilter
from .peer import client_address
from .scheduler import PositionCallback
from .session import Session
from .stop import StopReason
from .store import Store, StoreError, TurnRecord, open_store
from .tls import TLSError, create_context, describe, expiry_warning, load_material
from .turn import Message, Refusal

#: What a session is told when the server closes it to stop.
RECONNECT = "the server is restarting; please reconnect"

log = logging.getLogger("chat_server")

#: What a v2 client is told when its message has a banned word (the NOTICE and
#: the ERROR say the same; v1 gets the original warning bytes from the codec).
BANNED_WORD_REFUSAL = "use of cuss words is not allowed"


class ChatService:
    """The shared services of every session: it implements the ``TurnServices``
    a turn uses (``chat_server.turn``) and the ``SessionServices`` a session
    uses (``chat_server.session``)."""

    def __init__(self, settings: Settings, store: Store,
                 coordination: Coordination | None = None) -> None:
        self.settings = settings
        self.store = store
        #: One answer per user, the rate limit, failed-login counters: in memory,
        #: or across replicas through PostgreSQL (chat_server.coordination).
        self.coordination = coordination or LocalCoordination(settings.rate_limit)
        self.hasher = settings.argon2_hasher()
        self.auth = Authenticator(self.store, self.hasher,
                                  session_token_ttl=settings.session_token_ttl,
                                  shared_throttle=self.coordination.login_throttle)
        self.pool = BackendPool.from_settings(settings)
        self.scheduler = self.pool.scheduler
        self.banned = WatchedBannedWords(settings.cuss_words_file)
        self.tls = load_material(settings)
        self.gate = Gate(settings, create_context(self.tls))
        self.privacy = detector_for(settings.phone_regions)
        #: Long messages and costly answer steps are checked there (started by serve()).
        self.detection = DetectionWorker()
        self.sessions: set[Session] = set()
        #: Connection limits (server, per address); connections at the gate count.
        self.admission = Admission(settings.max_connections, settings.max_connections_per_address,
                                   settings.max_unauthenticated_per_address,
                                   connect_rate=settings.connect_rate_per_address,
                                   connect_burst=settings.connect_burst_per_address)
        self._refusals_logged = LogSampler()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        #: From SIGTERM: the readiness check answers 503 (CHAT_DRAIN_DELAY
        #: before ``shutting_down``, while the server still serves).
        self.draining = False
        self.conversations = ConversationCache(
            store, settings.history_cache_bytes, context_tokens=settings.context_tokens)
        #: Deletes the first start's password file once that password is changed.
        self.initial_password = InitialPasswordCheck(initial_password_path(settings), self.hasher)
        self.accounts = AccountWatch(
            store, settings.account_check_interval, logged_in=self.logged_in_users,
            end=self.end_sessions_of, initial_password=self.initial_password)

    # ------------------------------------------------------------------ TurnServices

    @property
    def context_tokens(self) -> int:
        return self.settings.context_tokens

    @property
    def system_prompt(self) -> str | None:
        return self.settings.system_prompt or None

    @property
    def model_ready(self) -> bool:
        return self.pool.ready

    async def moderate(self, text: str) -> Refusal | None:
        # Long or digit-heavy messages are checked in the moderation worker
        # (chat_server.moderation.worker): on adversarial 64 KiB input the
        # detectors take seconds, and a thread of ours would hold the GIL.
        verdict = await self.detection.check_message(self.banned.snapshot(), self.privacy, text)
        if verdict is None:
            return None
        if verdict == BANNED_WORD:
            return Refusal(NoticeKind.MODERATION, BANNED_WORD_REFUSAL, metrics.Reason.BANNED_WORD)
        return Refusal(NoticeKind.PRIVACY, verdict, metrics.Reason.PERSONAL_DATA)

    def resolve_model(self, name: str) -> str | None:
        return self.pool.resolve(name)

    def model_loading(self, model: str) -> str | None:
        # While the model is being pulled (or the backends are being probed for
        # the first time) say so; when it is merely unreachable, the request
        # itself is the best probe.
        availability = self.pool.availability(model)
        if availability.state is ModelState.LOADING:
            return availability.detail.rstrip(". ")
        return None

    def user_turn(self, user: str, on_position: PositionCallback) -> AbstractAsyncContextManager[None]:
        return self.coordination.user_turn(user, on_position)

    async def check_rate(self, user: str) -> float:
        return await self.coordination.check_rate(user)

    async def save(self, turn: TurnRecord, *, supersedes: int | None = None) -> bool:
        return await self.save_turn(turn, supersedes=supersedes)

    def generate(
        self, user: str, model: str, messages: list[Message], on_position: PositionCallback
    ) -> AsyncGenerator[ModelChunk, None]:
        log.debug("generation requested", extra={"event": "model_start", "user": user,
                                                 "model": model,
                                                 "context_messages": len(messages)})
        # The pool's own generator, not one wrapped around it: every chunk of
        # every answer would pass through the extra layer.
        return self.pool.stream(user, model, messages, on_position=on_position)

    def answer_filter(self, to_client_text: Callable[[str], str] | None = None) -> SteppedAnswerFilter:
        return SteppedAnswerFilter(
            AnswerFilter(self.banned, privacy=self.privacy, transform=to_client_text), self.detection)

    # ------------------------------------------------------------------ history
    async def conversation(self, user: str, conversation: str) -> Conversation:
        """The conversation's completed turns as chat messages, the model it
        goes on with, and its newest turn if that went unanswered, from one read
        of the store through the cache (so a conversation survives reconnects,
        restarts and a move to another replica, and a turn saved elsewhere is
        seen, model and all)."""
        found = await self.conversations.conversation(user, conversation)
        # A conversation whose model is no longer offered goes on with the default.
        model = (self.pool.resolve(found.model) if found.model else None) or self.pool.default_model
        return found._replace(model=model)

    async def save_turn(self, turn: TurnRecord, *, supersedes: int | None = None) -> bool:
        """Store a turn durably (before its END goes out); False if the store failed."""
        try:
            with metrics.store_write():
                await self.store.save_turn(turn, supersedes=supersedes)
        except StoreError as exc:
            log.error("could not store a turn: %s", exc, extra={"event": "store_error"})
            return False
        return True

    # ------------------------------------------------------------------ accounts
    def logged_in_users(self) -> list[Login]:
        """Who is logged in here, and under which password generation (for
        chat_server.accounts)."""
        return [(user, session.password_generation)
                for session in self.sessions if (user := session.user) is not None]

    async def end_sessions_of(self, logins: set[Login], reason: StopReason) -> int:
        """End every session logged in as one of ``logins`` (accounts disabled
        or removed, or passwords changed: ``reason``, one of accounts.ENDS)."""
        ending = [session for session in self.sessions
                  if (session.user, session.password_generation) in logins]
        await asyncio.gather(*(session.revoke(reason) for session in ending),
                             return_exceptions=True)
        return len(ending)

    # ------------------------------------------------------------------ connections
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from accept to close: the listener's callback. Its task
        is in ``self.tasks`` meanwhile (without a wrapper coroutine or a
        done-callback, and with the opening steps in a coroutine that has
        returned: each frame kept alive costs a few hundred bytes on every
        idle connection). It catches its own errors: the gate gives its task no
        done-callback."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        admitted: Ticket | None = None
        # The login deadline counts from here (the gate's wait for the first
        # byte and a TLS handshake are part of it).
        connected_at = asyncio.get_running_loop().time()
        try:
            admitted, tls = await self._open(reader, writer)
            if admitted is None:
                return
            session = Session(self, reader, writer, tls=tls)
            admitted.attach(session)
            self.sessions.add(session)
            try:
                await session.run(connected_at=connected_at)
            finally:
                self.sessions.discard(session)
                if session.user is not None:
                    # The store has the conversations; memory is for live sessions.
                    self.conversations.release(session.user)
        except Exception:
            # Its task has no done-callback that would (chat_server.gate).
            log.error("internal error in a connection", exc_info=True,
                      extra={"event": "internal_error"})
            writer.transport.abort()
        finally:
            if admitted is not None:
                admitted.release()
            self.tasks.discard(task)

    async def _open(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> tuple[Ticket | None, bool]:
        """Admission, then the gate (PROXY header from a trusted balancer, first
        byte, TLS). Returns the connection's ticket and whether it is TLS, or
        ``(None, False)`` when it was refused or closed (nothing left counted)."""
        configure_socket(writer)
        address = client_address(writer)  # the TCP peer, until a PROXY header names the client
        # A trusted balancer's connections count per address once its header named the client.
        behind_proxy = address in self.settings.trusted_proxies
        admitted: Ticket | Turnaway = (
            Turnaway(ErrorCode.SHUTTING_DOWN, "the server is restarting", Limit.SHUTDOWN)
            if self.shutting_down else self.admission.admit(address, per_address=not behind_proxy))
        if isinstance(admitted, Turnaway):
            metrics.connection_rejected(admitted.limit.reject_reason)
            await self._refuse(reader, writer, admitted, address)
            return None, False
        keep = False
        try:
            # Refusals by policy (TLS required, v1 off) happen in the gate.
            opened = await self.gate.open(reader, writer)
            if opened is None:
                return None, False
            if behind_proxy and (refusal := self.admission.move(
                    admitted, client_address(writer))) is not None:
                metrics.connection_rejected(refusal.limit.reject_reason)
                await turn_away(reader, writer, refusal.code, refusal.message, sniff=refusal.reply)
                self._log_refusal(refusal, client_address(writer))
                return None, False
            keep = True
            return admitted, opened.tls
        finally:
            if not keep:
                admitted.release()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      refusal: Turnaway, address: str) -> None:
        """Over a limit: answer in the peer's protocol (what it speaks is known
        within a second, or it is closed), then close."""
        with self.admission.refusing() as reply:
            if not (reply and refusal.reply):  # a flood: no time spent on it
                writer.close()
            elif await self.gate.open(reader, writer, timeout=SNIFF_SECONDS) is not None:
                await turn_away(reader, writer, refusal.code, refusal.message)
        self._log_refusal(refusal, address)

    def _shed(self, host: str) -> bool:
        """As a connection is accepted: drop it there and then when its address
        is over the connection rate and has had its replies (a reconnect
        storm's rest; chat_server.admission). A trusted balancer's connections
        are judged once their PROXY header names the client."""
        if host in self.settings.trusted_proxies or not self.admission.shed(host):
            return False
        metrics.connection_rejected(Limit.ADDRESS_RATE.reject_reason)
        self._log_refusal(Turnaway(ErrorCode.TOO_MANY_CONNECTIONS, "", Limit.ADDRESS_RATE,
                                   reply=False), host)
        return True

    def _log_refusal(self, refusal: Turnaway, address: str) -> None:
        """One line per limit and address every 10 s, with how many were left
        out: a client reconnecting in a loop is refused thousands of times a
        second (docs/SECURITY.md §10); the metric counts every one."""
        left_out = self._refusals_logged.admit((refusal.limit, address))
        if left_out is None:
            return
        extra: dict[str, object] = {"event": "reject", "limit": refusal.limit, "peer": address}
        if left_out:
            extra["not_logged_before"] = left_out
        log.warning("connection refused: %s", refusal.code.value, extra=extra)

    # ------------------------------------------------------------------ lifecycle
    async def serve(self) -> int:
        s = self.settings
        summary = s.log_summary()
        log.info("configuration: %s", " ".join(f"{k}={v}" for k, v in summary.items()),
                 extra={"event": "config"})
        log.info("%s", describe(self.tls), extra={"event": "tls_certificate"})
        if (warning := expiry_warning(self.tls)) is not None:
            log.warning("%s", warning, extra={"event": "tls_expiry"})
        try:
            await self._bootstrap()
        except OSError as exc:
            log.error("cannot start: data directory %s: %s", s.data_dir, exc.strerror or exc)
            await self.store.close()
            return 1
        metrics.server_started(__version__, s.model)
        metrics.watch_backends(self._backend_views)
        try:
            metrics_server = None if s.metrics_port is None else metrics.serve_http(s.metrics_host, s.metrics_port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s: %s", s.metrics_host, s.metrics_port, exc.strerror or exc)
            await self.store.close()
            return 1
        if metrics_server is not None:
            log.info("metrics on %s", metrics_server.url, extra={"event": "metrics_listening"})
        # Started before the listener, loaded with the list while it starts.
        self.detection.start(self.banned, self.privacy)
        admin_endpoint = await admin.start(s.admin_socket_path, admin.Limits(
            s.max_connections, sum(b.max_parallel for b in self.pool.status()), s.model))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        # Everything made so far lives as long as the process: out of the
        # collector's way (chat_server.memory).
        frozen = freeze_startup_objects()
        log.debug("%d startup objects frozen", frozen, extra={"event": "gc_freeze"})
        server = await start_gated_server(self.handle, s.host, s.port, backlog=1024, shed=self._shed)
        sockname = server.sockets[0].getsockname()
        log.info("chat-server listening on %s:%s (model %s)", sockname[0], sockname[1], s.model,
                 extra={"event": "listening"})
        health = None
        if s.health_port is not None:
            health = await readiness.start(s.health_host, s.health_port,
                                           lambda: readiness.assess(self))
        # Backends are probed (and missing models pulled) in the background;
        # "model ready: M" is logged when M can first be served.
        self.pool.start()
        # Accounts disabled or removed elsewhere end their sessions here.
        watch = asyncio.create_task(self.accounts.run(), name="account-watch")
        try:
            await stop.wait()
            self.draining = True
            if s.drain_delay > 0:
                # A balancer stops sending new connections once its check
                # sees 503; until then they are served as usual, not refused.
                log.info("draining: the readiness check answers 503; serving as usual for "
                         "%.0f s more (CHAT_DRAIN_DELAY)", s.drain_delay,
                         extra={"event": "drain_delay"})
                await asyncio.sleep(s.drain_delay)
        finally:
            self.draining = True
            log.info("shutting down: no new connections; answers in flight get %.0f s", s.shutdown_grace,
                     extra={"event": "shutdown"})
            self.shutting_down = True
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            metrics.server_stopping()
            server.close()
            self.gate.abort_all()
            await self._drain(s.shutdown_grace)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()
            await self.pool.aclose()
            await self.coordination.aclose()
            await self.store.close()
            if health is not None:  # answers 503 "draining" up to here
                await health.close()
            if admin_endpoint is not None:
                await admin_endpoint.close()
            if metrics_server is not None:
                metrics_server.close()
            self.detection.close()
            log.info("stopped", extra={"event": "stopped"})
        return 0

    async def _drain(self, grace: float) -> None:
        """Let answers in flight finish (they store themselves), then close everyone."""
        # Queued answers still get their slot; nothing new is accepted.
        self.scheduler.stop_accepting()
        answers = [t for s in self.sessions if (t := s.answers) is not None]
        # Every session is told to reconnect as soon as it has no answer
        # running (the idle ones now): its client goes to another replica
        # before its next message, instead of that message being refused here.
        closers = [asyncio.create_task(self._close_when_idle(s)) for s in list(self.sessions)]
        if answers:
            log.info("waiting for %d answers in flight", len(answers))
            _done, pending = await asyncio.wait(answers, timeout=grace)
            if pending:
                log.warning("%d answers did not finish in %.0f s; storing them as interrupted",
                            len(pending), grace)
                # Answers still queued for a slot end with shutting_down; the
                # ones generating are stopped; each stores what it has.
                self.scheduler.close()
                for session in list(self.sessions):
                    session.stop_answers(StopReason.SHUTDOWN)
                await asyncio.wait(pending, timeout=10)
        # Every generation has given its slot back before the model client closes.
        if not await self.scheduler.drain(5):
            log.warning("model generations still hold %d slots at shutdown",
                        self.scheduler.in_flight)
        await asyncio.gather(
            *(s.shutdown(RECONNECT) for s in list(self.sessions)),
            return_exceptions=True,
        )
        if closers:
            await asyncio.wait(closers, timeout=5)
            for closer in closers:
                closer.cancel()
        tasks = [t for t in self.tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            if pending:
                # Abort the sockets rather than cancel the tasks: on Python 3.11
                # a cancelled start_server callback task makes asyncio log a
                # CancelledError traceback; an aborted one just ends.
                for session in list(self.sessions):
                    session.abort()
                await asyncio.wait(pending, timeout=5)

    @staticmethod
    async def _close_when_idle(session: Session) -> None:
        if (answers := session.answers) is not None:
            await asyncio.wait([answers])
        with contextlib.suppress(Exception):
            await session.shutdown(RECONNECT)

    def _backend_views(self) -> list[metrics.BackendView]:
        """The backends' states, for metrics and status (run on the event loop)."""
        views = []
        loading = self.pool.availability(self.pool.default_model).state is ModelState.LOADING
        for b in self.pool.status():
            if b.state is BackendHealth.STARTING:
                state = metrics.BackendState.STARTING
            elif b.state is BackendHealth.UP and b.models:
                state = metrics.BackendState.READY
            elif b.state is BackendHealth.UP and loading:
                state = metrics.BackendState.PULLING
            else:  # down, or up without any of the models it should serve
                state = metrics.BackendState.UNAVAILABLE
            detail = "" if b.state is BackendHealth.UP else f"backend {b.state.value}"
            views.append(metrics.BackendView(b.name, state, ", ".join(b.models), detail,
                                             b.in_flight, b.max_parallel))
        return views

    async def _bootstrap(self) -> None:
        """The first user (chat_server.bootstrap), then the initial password's state."""
        created = await ensure_first_user(self.store, self.settings, self.hasher)
        await self.initial_password.check(self.store, remind=not created)


async def _main(settings: Settings) -> int:
    try:
        store = await open_store(settings.db, password=settings.db_password)
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        coordination = await open_coordination(store.engine, settings.db,
                                               password=settings.db_password,
                                               rate_limit=settings.rate_limit)
    except CoordinationError as exc:
        await store.close()
        log.error("cannot start: %s", exc)
        return 1
    try:
        service = ChatService(settings, store, coordination)
    except (TLSError, FileNotFoundError, OSError) as exc:
        await coordination.aclose()
        await store.close()
        log.error("cannot start: %s", exc)
        return 1
    return await service.serve()


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    # The official model clients (httpx -> httpcore, anyio) ask sniffio which
    # async library runs at every lock, event and cancel scope of every request
    # and line; unless told, sniffio finds out each time through
    # asyncio.current_task (pure Python on 3.11: about 3 % of the server's CPU
    # under load, docs/BENCHMARKS.md). This thread runs asyncio and nothing
    # else: say so once, through sniffio's own hook for event loops.
    previous, sniffio.thread_local.name = sniffio.thread_local.name, "asyncio"
    try:
        return asyncio.run(_main(settings))
    finally:
        sniffio.thread_local.name = previous


__all__ = ["ChatService", "run"]
