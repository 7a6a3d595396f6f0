"""
chat_server.metrics
~~~~~~~~~~~~~~~~~~~

What the server is doing, recorded through one narrow interface and shown two ways:

* **Prometheus metrics** (``prometheus-client``), served on ``CHAT_METRICS_PORT``
  by the library's HTTP server in a thread of its own, so a scrape never runs on
  the event loop. Every metric is listed in :data:`METRICS` (the documentation
  and the tests use that list).
* **Live state** for the local admin endpoint (:mod:`chat_server.admin`): who is
  connected, since when, over which protocol, how many messages they sent.

The rest of the server calls the module-level functions (one line per event)::

    metrics.connection_opened(session_id, Protocol.V2)
    metrics.login_failed(LoginFailure.INVALID)
    metrics.message_outcome(Outcome.REFUSED, Reason.BANNED_WORD, session=session_id)
    async with metrics.generation_slot(scheduler.slot(user)): ...
    with metrics.store_write(): await asyncio.to_thread(store.save_turn, turn)

**No user name, message text or address ever becomes a label**, by design: every
label value is a member of one of the enums below (closed sets), checked at run
time; the one exception, the backend name, is the operator's configuration,
checked against a name pattern and capped in number. User names go only to the
live state, which only the local admin endpoint serves.

A burst of moderation refusals from *one* user is still visible without a user
label: :class:`RefusalWindow` keeps each user's refusal times of the last
:data:`REFUSAL_WINDOW_SECONDS` in memory and the gauge
``chat_moderation_refusals_max_per_user`` reports the largest count any single
user reached in that window (who it is: ``chat-server status`` or the logs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "METRICS",
    "REFUSAL_WINDOW_SECONDS",
    "BackendState",
    "BackendView",
    "LoginFailure",
    "Metrics",
    "MetricsServer",
    "Outcome",
    "Protocol",
    "Reason",
    "RefusalWindow",
    "RejectReason",
    "SessionView",
    "Transport",
    "answer_timing",
    "connection_closed",
    "connection_opened",
    "connection_rejected",
    "default",
    "generation_slot",
    "login_failed",
    "login_succeeded",
    "message_outcome",
    "message_received",
    "serve_http",
    "server_started",
    "server_stopping",
    "store_write",
    "tokens",
    "watch_backends",
]


T = TypeVar("T")

# The *_created series (when each counter was created) double the number of series
# and tell nothing a scrape's own timestamps don't.
disable_created_metrics()

# ---------------------------------------------------------------------- label values
class Protocol(StrEnum):
    """The wire protocol a connection speaks (detected from its first byte)."""

    V1 = "v1"
    V2 = "v2"

    @classmethod
    def of(cls, version: int | None) -> Protocol:
        """The protocol of a codec version (1: the original format, else v2)."""
        return cls.V1 if version == 1 else cls.V2


class Transport(StrEnum):
    PLAIN = "plain"
    TLS = "tls"


class RejectReason(StrEnum):
    """Why a connection was turned away before a session started."""

    CONNECTION_LIMIT = "connection_limit"
    ADDRESS_LIMIT = "address_limit"
    ADDRESS_RATE = "address_rate"  # new connections from one address too fast (CHAT_CONNECT_RATE_PER_ADDRESS)
    SHUTTING_DOWN = "shutting_down"
    TLS_REQUIRED = "tls_required"  # plaintext v2 while CHAT_REQUIRE_TLS=true
    V1_DISABLED = "v1_disabled"  # v1 while CHAT_ALLOW_V1=false
    HANDSHAKE = "handshake"  # the TLS handshake failed or timed out
    PROXY_UNTRUSTED = "proxy_untrusted"  # a PROXY header from outside CHAT_TRUSTED_PROXIES


class LoginFailure(StrEnum):
    INVALID = "failure"  # wrong password, unknown or disabled user: all look the same
    THROTTLED = "throttled"  # refused before checking, too many recent failures


class Outcome(StrEnum):
    """How one chat message ended."""

    ANSWERED = "answered"
    REFUSED = "refused"  # by moderation; the reason says which rule
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"  # v2: another answer of the session is in progress
    REJECTED = "rejected"  # not a valid request (a model that is not offered)
    CANCELLED = "cancelled"  # by the user
    INTERRUPTED = "interrupted"  # the connection closed or the server shut down mid-answer
    FAILED = "failed"  # the model (or the server) could not answer


class Reason(StrEnum):
    NONE = "none"
    BANNED_WORD = "banned_word"
    PERSONAL_DATA = "personal_data"
    USER = "user"
    DISCONNECT = "disconnect"
    SHUTDOWN = "shutdown"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_LOADING = "model_loading"
    MODEL_UNAVAILABLE = "model_unavailable"
    MODEL_ERROR = "model_error"
    INTERNAL = "internal"


#: The (outcome, reason) pairs the server records; all start at 0 so that
#: ``rate()`` and the alert rules see them from the first scrape.
OUTCOME_REASONS: Final[dict[Outcome, tuple[Reason, ...]]] = {
    Outcome.ANSWERED: (Reason.NONE,),
    Outcome.REFUSED: (Reason.BANNED_WORD, Reason.PERSONAL_DATA),
    Outcome.RATE_LIMITED: (Reason.NONE,),
    Outcome.BUSY: (Reason.NONE,),
    Outcome.REJECTED: (Reason.UNKNOWN_MODEL,),
    Outcome.CANCELLED: (Reason.USER,),
    Outcome.INTERRUPTED: (Reason.DISCONNECT, Reason.SHUTDOWN),
    Outcome.FAILED: (Reason.MODEL_LOADING, Reason.MODEL_UNAVAILABLE, Reason.MODEL_ERROR,
                     Reason.INTERNAL),
}


class BackendState(StrEnum):
    STARTING = "starting"
    PULLING = "pulling"
    READY = "ready"
    UNAVAILABLE = "unavailable"

    @classmethod
    def parse(cls, value: str | BackendState) -> BackendState:
        try:
            return cls(value)
        except ValueError:
            return cls.UNAVAILABLE


#: A backend name as configured by the operator (it becomes a label value).
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: More distinct backend names than this are folded into one "other" label.
MAX_BACKEND_LABELS = 64


#: How long a scrape waits for the event loop to report the backends' states.
SAMPLE_TIMEOUT = 1.0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _label(value: Enum) -> str:
    """The one door to a label value: only enum members pass."""
    if not isinstance(value, Enum):
        raise TypeError(f"metric labels come from enums only, got {type(value).__name__}")
    return str(value.value)


# ---------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class MetricDoc:
    name: str  # as exposed (counters with their _total)
    kind: str
    labels: tuple[str, ...]
    help: str


REFUSAL_WINDOW_SECONDS: Final = 300.0

_FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ANSWER_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_QUEUE_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

#: Every metric of the server (process_* and python_* from the client library come on top).
METRICS: Final[tuple[MetricDoc, ...]] = (
    MetricDoc("chat_build_info", "gauge", ("version", "model"), "Version of the server and its default model."),
    MetricDoc("chat_start_time_seconds", "gauge", (), "When the server started (Unix time)."),
    MetricDoc("chat_connections_open", "gauge", ("protocol", "transport"), "Open client connections whose protocol is known."),
    MetricDoc("chat_connections_total", "counter", ("protocol", "transport"), "Client connections opened."),
    MetricDoc("chat_connections_rejected_total", "counter", ("reason",), "Connections turned away before a session started."),
    MetricDoc("chat_users_logged_in", "gauge", (), "Distinct users with at least one logged-in connection."),
    MetricDoc("chat_logins_total", "counter", ("result",), "Login attempts by result: success, failure (wrong credentials), throttled."),
    MetricDoc("chat_messages_total", "counter", ("outcome", "reason"), "Chat messages by how they ended."),
    MetricDoc("chat_moderation_refusals_max_per_user", "gauge", (), "The most moderation refusals any single user got in the last 5 minutes."),
    MetricDoc("chat_prompt_tokens_total", "counter", (), "Prompt tokens the model read (as it reports them)."),
    MetricDoc("chat_answer_tokens_total", "counter", (), "Answer tokens the model generated (as it reports them)."),
    MetricDoc("chat_first_token_seconds", "histogram", (), "From receiving a message to the model's first token of its answer."),
    MetricDoc("chat_answer_duration_seconds", "histogram", (), "From receiving a message to the end of its complete answer."),
    MetricDoc("chat_queue_length", "gauge", (), "Generations waiting for a model slot."),
    MetricDoc("chat_queue_wait_seconds", "histogram", (), "Time a generation waited for a model slot."),
    MetricDoc("chat_generations_in_flight", "gauge", (), "Generations holding a model slot."),
    MetricDoc("chat_backend_up", "gauge", ("backend",), "1 if the model backend is ready to answer, else 0."),
    MetricDoc("chat_backend_state", "gauge", ("backend", "state"), "1 for the backend's current state (starting, pulling, ready, unavailable)."),
    MetricDoc("chat_store_write_seconds", "histogram", (), "Time to store one turn (durably committed)."),
    MetricDoc("chat_store_writes_total", "counter", ("result",), "Turn writes by result: ok, error."),
)


class StoreResult(StrEnum):
    OK = "ok"
    ERROR = "error"


class _LoginResult(StrEnum):
    SUCCESS = "success"
    FAILURE = LoginFailure.INVALID.value
    THROTTLED = LoginFailure.THROTTLED.value


# ---------------------------------------------------------------------- live state
@dataclass(slots=True)
class SessionView:
    """One connection as the admin endpoint shows it (no address, no text)."""

    id: str
    protocol: Protocol
    transport: Transport
    opened_at: float  # Unix time
    user: str | None = None
    logged_in_at: float | None = None
    messages: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class BackendView:
    """A model backend as the server sees it (``detail`` is a sentence for people)."""

    name: str
    state: BackendState
    model: str = ""
    detail: str = ""
    in_flight: int | None = None
    max_parallel: int | None = None


class RefusalWindow:
    """Per-user moderation refusal times over a sliding window, kept in memory
    only; exposes the largest count, never who. Thread-safe (the scrape runs in
    another thread). Memory is bounded: at most ``max_users`` users (the ones
    with the oldest last refusal go first) and ``cap`` times per user."""

    def __init__(self, window: float = REFUSAL_WINDOW_SECONDS, *, max_users: int = 10_000,
                 cap: int = 1_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_users = max_users
        self.cap = cap
        self._clock = clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Users whose refusal times are held (at most ``max_users``)."""
        with self._lock:
            return len(self._times)

    def record(self, user: str) -> None:
        now = self._clock()
        with self._lock:
            times = self._times.pop(user, None)  # re-insert: dict order = last refusal
            if times is None:
                times = deque(maxlen=self.cap)
            times.append(now)
            self._times[user] = times
            while len(self._times) > self.max_users:
                del self._times[next(iter(self._times))]

    def max_count(self) -> int:
        """The most refusals of one user within the window (and forget older ones)."""
        cutoff = self._clock() - self.window
        best = 0
        with self._lock:
            for user in list(self._times):
                times = self._times[user]
                while times and times[0] <= cutoff:
                    times.popleft()
                if times:
                    best = max(best, len(times))
                else:
                    del self._times[user]
        return best

    def count(self, user: str) -> int:
        cutoff = self._clock() - self.window
        with self._lock:
            times = self._times.get(user)
            return 0 if times is None else sum(1 for t in times if t > cutoff)


class _LiveCollector(Collector):
    """Gauges computed at scrape time: refusal window and backend states."""

    def __init__(self, owner: Metrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return []  # computed at collect time; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        owner = self._owner
        refusals = GaugeMetricFamily(
            "chat_moderation_refusals_max_per_user",
            "The most moderation refusals any single user got in the last "
            f"{REFUSAL_WINDOW_SECONDS / 60:.0f} minutes.")
        refusals.add_metric([], owner.refusals.max_count())
        yield refusals
        up = GaugeMetricFamily("chat_backend_up", "1 if the model backend is ready to answer, else 0.",
                               labels=["backend"])
        state = GaugeMetricFamily(
            "chat_backend_state",
            "1 for the backend's current state (starting, pulling, ready, unavailable).",
            labels=["backend", "state"])
        for backend in owner.backends():
            up.add_metric([backend.name], 1.0 if backend.state is BackendState.READY else 0.0)
            for s in BackendState:
                state.add_metric([backend.name, _label(s)], 1.0 if backend.state is s else 0.0)
        yield up
        yield state


# ---------------------------------------------------------------------- the recorder
class Metrics:
    """All metrics of one server process, in a registry of its own."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
        self._info = Info("chat_build", "Version of the server and its default model.", registry=r)
        self._start_time = Gauge("chat_start_time_seconds", "When the server started (Unix time).",
                                 registry=r)
        self._open = Gauge("chat_connections_open", "Open client connections whose protocol is known.",
                           ["protocol", "transport"], registry=r)
        self._opened = Counter("chat_connections", "Client connections opened.",
                               ["protocol", "transport"], registry=r)
        self._rejected = Counter("chat_connections_rejected",
                                 "Connections turned away before a session started.", ["reason"],
                                 registry=r)
        self._users = Gauge("chat_users_logged_in",
                            "Distinct users with at least one logged-in connection.", registry=r)
        self._logins = Counter("chat_logins", "Login attempts by result: success, failure "
                               "(wrong credentials), throttled.", ["result"], registry=r)
        self._messages = Counter("chat_messages", "Chat messages by how they ended.",
                                 ["outcome", "reason"], registry=r)
        self._prompt_tokens = Counter("chat_prompt_tokens",
                                      "Prompt tokens the model read (as it reports them).", registry=r)
        self._answer_tokens = Counter("chat_answer_tokens",
                                      "Answer tokens the model generated (as it reports them).",
                                      registry=r)
        self._first_token = Histogram(
            "chat_first_token_seconds",
            "From receiving a message to the model's first token of its answer.",
            buckets=_FIRST_TOKEN_BUCKETS, registry=r)
        self._answer = Histogram(
            "chat_answer_duration_seconds",
            "From receiving a message to the end of its complete answer.",
            buckets=_ANSWER_BUCKETS, registry=r)
        self._queue = Gauge("chat_queue_length", "Generations waiting for a model slot.", registry=r)
        self._queue_wait = Histogram("chat_queue_wait_seconds",
                                     "Time a generation waited for a model slot.",
                                     buckets=_QUEUE_BUCKETS, registry=r)
        self._in_flight = Gauge("chat_generations_in_flight", "Generations holding a model slot.",
                                registry=r)
        self._store_seconds = Histogram("chat_store_write_seconds",
                                        "Time to store one turn (durably committed).",
                                        buckets=_STORE_BUCKETS, registry=r)
        self._store_writes = Counter("chat_store_writes", "Turn writes by result: ok, error.",
                                     ["result"], registry=r)
        self.refusals = RefusalWindow()
        r.register(_LiveCollector(self))

        # Every label combination exists from the start (at 0), and its child is
        # kept: a recording call is a dict lookup, not a label resolution.
        self._conn_children: dict[tuple[Protocol, Transport], tuple[Any, Any]] = {}
        for protocol in Protocol:
            for transport in Transport:
                if protocol is Protocol.V1 and transport is Transport.TLS:
                    continue  # the original client has no TLS
                self._conn_children[protocol, transport] = (
                    self._open.labels(_label(protocol), _label(transport)),
                    self._opened.labels(_label(protocol), _label(transport)))
        for reject in RejectReason:
            self._rejected.labels(_label(reject))
        self._login_children = {result: self._logins.labels(_label(result)) for result in _LoginResult}
        self._message_children = {
            (outcome, reason): self._messages.labels(_label(outcome), _label(reason))
            for outcome, reasons in OUTCOME_REASONS.items() for reason in reasons}
        self._store_children = {r: self._store_writes.labels(_label(r)) for r in StoreResult}

        # Live state (event loop only, except where noted).
        self.started_at = time.time()
        self.stopping = False
        self.version = ""
        self.model = ""
        self.sessions: dict[str, SessionView] = {}
        self._logged_in: dict[str, int] = {}  # user -> logged-in sessions
        self.queue_length = 0
        self.in_flight = 0
        self._backends: Callable[[], Iterable[BackendView]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_backends: list[BackendView] = []
        self._backend_names: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------
    def server_started(self, version: str, model: str) -> None:
        """Call once at start: build info and start time (uptime counts from here)."""
        self.started_at = time.time()
        self.version, self.model = version, model
        self._info.info({"version": version, "model": model})
        self._start_time.set(self.started_at)

    def server_stopping(self) -> None:
        """Shutdown began (shown by the admin endpoint)."""
        self.stopping = True

    # -- connections -----------------------------------------------------------------
    def connection_opened(self, session: str, protocol: Protocol,
                          transport: Transport = Transport.PLAIN) -> None:
        """A connection showed which protocol it speaks (its first frame arrived)."""
        if session in self.sessions:
            return
        children = self._conn_children.get((protocol, transport))
        if children is None:
            children = (self._open.labels(_label(protocol), _label(transport)),
                        self._opened.labels(_label(protocol), _label(transport)))
        children[0].inc()
        children[1].inc()
        self.sessions[session] = SessionView(session, protocol, transport, time.time())

    def connection_closed(self, session: str) -> None:
        """The connection ended (a no-op for one that never showed its protocol)."""
        view = self.sessions.pop(session, None)
        if view is None:
            return
        self._open.labels(view.protocol.value, view.transport.value).dec()
        if view.user is not None:
            self._logout(view.user)

    def connection_rejected(self, reason: RejectReason) -> None:
        self._rejected.labels(_label(reason)).inc()

    # -- logins ----------------------------------------------------------------------
    def login_succeeded(self, session: str, user: str) -> None:
        self._login_children[_LoginResult.SUCCESS].inc()
        view = self.sessions.get(session)
        if view is None or view.user is not None:
            return
        view.user, view.logged_in_at = user, time.time()
        self._logged_in[user] = self._logged_in.get(user, 0) + 1
        self._users.set(len(self._logged_in))

    def login_failed(self, reason: LoginFailure) -> None:
        _label(reason)
        self._login_children[_LoginResult(reason.value)].inc()

    def _logout(self, user: str) -> None:
        left = self._logged_in.get(user, 0) - 1
        if left > 0:
            self._logged_in[user] = left
        else:
            self._logged_in.pop(user, None)
        self._users.set(len(self._logged_in))

    # -- messages --------------------------------------------------------------------
    def message_received(self, session: str) -> None:
        view = self.sessions.get(session)
        if view is not None:
            view.messages += 1

    def message_outcome(self, outcome: Outcome, reason: Reason = Reason.NONE, *,
                        session: str | None = None) -> None:
        """How a message ended. ``session`` attributes a refusal to its user (in
        memory only: see :class:`RefusalWindow`)."""
        child = self._message_children.get((outcome, reason))
        if child is None:  # a pair outside OUTCOME_REASONS: still enum members only
            child = self._messages.labels(_label(outcome), _label(reason))
        child.inc()
        if outcome is Outcome.REFUSED and session is not None:
            view = self.sessions.get(session)
            if view is not None:
                view.refused += 1
                if view.user is not None:
                    self.refusals.record(view.user)

    def tokens(self, prompt: int, answer: int) -> None:
        if prompt > 0:
            self._prompt_tokens.inc(prompt)
        if answer > 0:
            self._answer_tokens.inc(answer)

    def answer_timing(self, first_token: float | None, total: float | None) -> None:
        """Seconds from the message to the model's first token (None: there was
        none) and to the end of a complete answer (None: it did not complete)."""
        if first_token is not None:
            self._first_token.observe(max(first_token, 0.0))
        if total is not None:
            self._answer.observe(max(total, 0.0))

    # -- the model queue -------------------------------------------------------------
    @asynccontextmanager
    async def generation_slot(self, slot: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
        """Wrap a scheduler slot: counts the wait (queue length, wait time) and
        the holding (generations in flight); ``as`` gives what the slot gives::

            async with metrics.generation_slot(scheduler.slot(user, ...)) as grant:
        """
        self.queue_length += 1
        self._queue.inc()
        started = time.monotonic()
        waiting = True
        try:
            async with slot as granted:
                waiting = False
                self.queue_length -= 1
                self._queue.dec()
                self._queue_wait.observe(time.monotonic() - started)
                self.in_flight += 1
                self._in_flight.inc()
                try:
                    yield granted
                finally:
                    self.in_flight -= 1
                    self._in_flight.dec()
        finally:
            if waiting:  # the slot was not granted (refused, or the wait cancelled)
                self.queue_length -= 1
                self._queue.dec()

    # -- storage ---------------------------------------------------------------------
    @contextmanager
    def store_write(self) -> Iterator[None]:
        """Time one durable write (a turn): ``with metrics.store_write(): await ...``.
        An exception counts as an error and passes on."""
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self._store_seconds.observe(time.perf_counter() - started)
            self._store_children[StoreResult.OK if ok else StoreResult.ERROR].inc()

    # -- model backends --------------------------------------------------------------
    def watch_backends(self, source: Callable[[], Iterable[BackendView]]) -> None:
        """Where backend states come from. Called from the event loop, ``source``
        always runs on that loop: a scrape (in the metrics thread) asks the loop
        for it and waits at most :data:`SAMPLE_TIMEOUT` seconds, else shows the
        last states it saw (a stalled loop never stalls a scrape)."""
        self._backends = source
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def _sample(self) -> list[BackendView]:
        assert self._backends is not None
        source, loop = self._backends, self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            return list(source())
        result: concurrent.futures.Future[list[BackendView]] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(list(source()))
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=SAMPLE_TIMEOUT)

    def backends(self) -> list[BackendView]:
        if self._backends is None:
            return []
        try:
            views = self._last_backends = self._sample()
        except Exception:  # a scrape never fails because of a source: the last known states
            views = self._last_backends
        out = []
        for view in views:
            name = view.name if _BACKEND_NAME.match(view.name) else "invalid"
            if name not in self._backend_names:
                if len(self._backend_names) >= MAX_BACKEND_LABELS:
                    name = "other"
                else:
                    self._backend_names.add(name)
            out.append(BackendView(name, BackendState.parse(view.state), view.model,
                                   view.detail, view.in_flight, view.max_parallel))
        return out

    # -- reading ---------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """Message and login counters since start: ``{"messages": {outcome: n}, "logins": {...}}``."""
        messages: dict[str, int] = {o.value: 0 for o in Outcome}
        logins: dict[str, int] = {r.value: 0 for r in _LoginResult}
        for family in self._messages.collect():
            for s in family.samples:
                if s.name == "chat_messages_total":
                    messages[s.labels["outcome"]] += int(s.value)
        for family in self._logins.collect():
            for s in family.samples:
                if s.name == "chat_logins_total":
                    logins[s.labels["result"]] += int(s.value)
        return {"messages": messages, "logins": logins}


class MetricsServer:
    """The Prometheus HTTP endpoint (``/metrics``), in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        address = self._httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------- the process's recorder
#: The server's recorder; the functions below are its bound methods.
default = Metrics()

server_started = default.server_started
server_stopping = default.server_stopping
connection_opened = default.connection_opened
connection_closed = default.connection_closed
connection_rejected = default.connection_rejected
login_succeeded = default.login_succeeded
login_failed = default.login_failed
message_received = default.message_received
message_outcome = default.message_outcome
tokens = default.tokens
answer_timing = default.answer_timing
generation_slot = default.generation_slot
store_write = default.store_write
watch_backends = default.watch_backends


def serve_http(host: str, port: int) -> MetricsServer:
    """Serve the process's metrics on ``host:port`` (0: a free port); raises OSError."""
    return MetricsServer(default.registry, host, port)
