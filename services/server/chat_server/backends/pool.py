"""The pool of model backends: discovery, pulls, health, routing and failover.

- **Discovery.** Each backend is probed by listing its models (``/api/tags``,
  ``/v1/models``) at start and every ``probe_interval`` seconds. An allowed
  model that an Ollama backend lacks is pulled (progress in the logs); one
  that an OpenAI-compatible backend lacks is reported once and not routed
  there.
- **Health.** A backend whose probe fails, or that refuses a connection,
  leaves the pool (one warning line) and is probed with backoff until it
  answers again, when it rejoins (one info line).
- **Routing.** The pool keeps the fair scheduler's resources in step with
  what each healthy backend serves; a request for model M is granted a slot
  on the healthy backend serving M with the fewest generations in flight
  relative to its max parallel, fairness holding over the whole pool.
- **Failover.** A request that fails before its first token (refused
  connection, 503, a stall before the first token, ...) is retried on another
  backend serving M, once per backend, ahead of the queue. A failure after
  text was sent ends the answer with the error: nothing is spliced.
- **Cancel.** Closing the stream closes the HTTP request on whichever backend
  holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from .. import metrics
from ..config import BackendKind, BackendSpec, Settings, model_key
from ..scheduler import FairScheduler, NoCapacity, PositionCallback
from .base import Backend, Message, ModelChunk
from .errors import Cause, ModelError, ModelFailed, ModelUnavailable
from .ollama_api import OllamaBackend

__all__ = [
    "Availability",
    "BackendHealth",
    "BackendPool",
    "BackendStatus",
    "ModelState",
    "make_backend",
]

log = logging.getLogger("chat_server.backends")

#: First delay between probes of a backend that is down; doubles up to the probe interval.
MIN_PROBE_DELAY = 0.25
#: First delay before a failed pull is tried again; doubles up to MAX_PULL_DELAY.
MIN_PULL_DELAY = 2.0
MAX_PULL_DELAY = 300.0


class BackendHealth(enum.Enum):
    STARTING = "starting"  # not probed yet
    UP = "up"  # answered its last probe: in the pool
    DOWN = "down"  # failed: out of the pool, probed with backoff


class ModelState(enum.Enum):
    READY = "ready"  # at least one healthy backend serves it
    LOADING = "loading"  # backends are starting, or it is being pulled
    UNAVAILABLE = "unavailable"  # no backend can serve it now


@dataclass(frozen=True, slots=True)
class Availability:
    state: ModelState
    detail: str  # a sentence for user notices


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """A backend as the pool sees it (for logs and health reports)."""

    name: str
    kind: BackendKind
    state: BackendHealth
    models: tuple[str, ...]  # allowed models it serves now
    in_flight: int
    max_parallel: int


def make_backend(spec: BackendSpec, *, connect_timeout: float, read_timeout: float) -> Backend:
    """The client object for one configured backend."""
    cls: type[Backend]
    if spec.kind is BackendKind.OLLAMA:
        cls = OllamaBackend
    else:
        # Imported when a backend needs it: the official `openai` package takes
        # about 0.8 s of CPU to import (its type modules), which every start of
        # a server with Ollama backends only (the default), and every `chat-server`
        # command, would pay for nothing.
        from .openai_api import OpenAIBackend

        cls = OpenAIBackend
    return cls(spec.name, spec.url, max_parallel=spec.max_parallel, api_key=spec.api_key,
               connect_timeout=connect_timeout, read_timeout=read_timeout)


@dataclass(eq=False)
class _Member:
    backend: Backend
    state: BackendHealth = BackendHealth.STARTING
    served: dict[str, str] = field(default_factory=dict)  # allowed name -> the service's name
    pulling: dict[str, int] = field(default_factory=dict)  # allowed name -> percent
    pull_retry: dict[str, tuple[float, float]] = field(default_factory=dict)  # (when, delay)
    reported_missing: frozenset[str] = frozenset()
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    probing: asyncio.Task[bool] | None = None

    @property
    def name(self) -> str:
        return self.backend.name


class BackendPool:
    """All backends, their health, and routed, failed-over streaming."""

    def __init__(self, backends: Sequence[Backend], *, default_model: str,
                 models: Sequence[str] = (), pull: bool = True, probe_interval: float = 10.0,
                 min_probe_delay: float = MIN_PROBE_DELAY) -> None:
        if not backends:
            raise ValueError("a pool needs at least one backend")
        self.default_model = default_model
        self.models: tuple[str, ...] = tuple(models) or (default_model,)
        self._keys = {model_key(m): m for m in self.models}
        self._pull = pull
        self._interval = probe_interval
        self._min_delay = min(min_probe_delay, probe_interval)
        self.scheduler = FairScheduler()
        self._members = {b.name: _Member(b) for b in backends}
        self._servable: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendPool:
        backends = [make_backend(spec, connect_timeout=settings.model_connect_timeout,
                                 read_timeout=settings.model_read_timeout)
                    for spec in settings.backend_specs()]
        return cls(backends, default_model=settings.model, models=settings.allowed_models(),
                   pull=settings.pull_model, probe_interval=settings.probe_interval)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start probing (and pulling) in the background."""
        for member in self._members.values():
            self._tasks.append(asyncio.create_task(self._monitor(member),
                                                   name=f"backend-{member.name}"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for member in self._members.values():
            if member.probing is not None:
                member.probing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await member.probing
            with contextlib.suppress(Exception):
                await member.backend.aclose()

    # ------------------------------------------------------------------ what users see
    def resolve(self, name: str | None) -> str | None:
        """The allowed model a user's name refers to (None: not offered);
        no name means the default model."""
        if name is None or not name.strip():
            return self.default_model
        return self._keys.get(model_key(name))

    def availability(self, model: str) -> Availability:
        if self.scheduler.capacity(model) > 0:
            return Availability(ModelState.READY, "The model is ready.")
        members = self._members.values()
        pulling = [m.pulling[model] for m in members if model in m.pulling]
        if pulling:
            return Availability(ModelState.LOADING,
                                f"The model {model} is being downloaded ({max(pulling)}%).")
        if any(m.state is BackendHealth.STARTING for m in members):
            return Availability(ModelState.LOADING, "The model service is starting.")
        if any(m.state is BackendHealth.DOWN for m in members):
            return Availability(ModelState.UNAVAILABLE, Cause.UNREACHABLE.value)
        if any(model in m.pull_retry for m in members):
            return Availability(ModelState.UNAVAILABLE, Cause.PULL_FAILED.value)
        return Availability(ModelState.UNAVAILABLE, Cause.NO_BACKEND.value)

    @property
    def ready(self) -> bool:
        """Whether the default model can be served now."""
        return self.scheduler.capacity(self.default_model) > 0

    def status(self) -> list[BackendStatus]:
        return [BackendStatus(m.name, m.backend.kind, m.state, tuple(sorted(self._serving(m))),
                              self.scheduler.in_flight_on(m.name), m.backend.max_parallel)
                for m in self._members.values()]

    # ------------------------------------------------------------------ streaming
    async def stream(self, user: str, model: str, messages: Sequence[Message], *,
                     on_position: PositionCallback | None = None,
                     ) -> AsyncGenerator[ModelChunk, None]:
        """A fair slot on the best backend for ``model``, then its answer.

        Chunks carry the backend and model that answered. Use it as
        ``async with contextlib.aclosing(pool.stream(...))``; closing it early
        aborts the upstream request. Raises ModelError (``.backend`` says
        which backend failed, None if none was tried) and SchedulerClosed.
        """
        if model not in self.models:
            raise ModelFailed(Cause.UNKNOWN_MODEL, f"model {model!r} is not in CHAT_MODELS",
                              retry_elsewhere=False)
        tried: set[str] = set()
        last: ModelError | None = None
        probed = False
        while True:
            try:
                async with metrics.generation_slot(self.scheduler.slot(
                        user, on_position, model=model, exclude=tried, urgent=bool(tried))) as grant:
                    member = self._members[grant.resource]
                    sent = False
                    try:
                        chat = member.backend.chat(member.served[model], messages,
                                                   answer_model=model)
                        async with contextlib.aclosing(chat) as chunks:
                            async for chunk in chunks:
                                sent = sent or bool(chunk.text)
                                yield chunk
                        return
                    except ModelError as exc:
                        exc.backend = member.name
                        self._failed(member, model, exc)
                        if sent or not exc.retry_elsewhere:
                            raise
                        log.warning("backend %s failed before the first token (%s); trying"
                                    " another backend that serves %s, if any", member.name,
                                    exc.detail, model,
                                    extra={"event": "backend_failover", "backend": member.name})
                        last = exc
                        tried.add(member.name)
            except NoCapacity:
                if last is not None:
                    raise last from None
                if not probed and await self._probe_unhealthy(model):
                    # A backend came back, or lists the model again (a 404
                    # seen by a concurrent request made us forget it): the
                    # request itself was the probe.
                    probed = True
                    continue
                detail = f"no healthy backend serves model {model}"
                if any(m.state is BackendHealth.DOWN for m in self._members.values()):
                    raise ModelUnavailable(Cause.UNREACHABLE, detail) from None
                raise ModelUnavailable(Cause.NO_BACKEND, detail) from None

    def _failed(self, member: _Member, model: str, exc: ModelError) -> None:
        """What a failed request tells about its backend."""
        if exc.cause is Cause.UNREACHABLE:
            self._mark_down(member, exc)
            member.wake.set()  # start probing it with backoff
        elif exc.cause is Cause.MISSING and model in member.served:
            del member.served[model]  # deleted behind our back: refresh (and pull) it
            self._sync(member)
            member.wake.set()

    async def _probe_unhealthy(self, model: str) -> bool:
        """Probe, now, every backend that is not up or does not serve ``model``
        (one probe per backend at a time, shared with its monitor); True if
        one of them serves it afterwards."""
        waiting = [m for m in self._members.values()
                   if m.state is not BackendHealth.UP or model not in m.served]
        if not waiting:
            return False
        await asyncio.gather(*(self._probe(m) for m in waiting), return_exceptions=True)
        return any(m.state is BackendHealth.UP and model in self._serving(m) for m in waiting)

    # ------------------------------------------------------------------ health
    async def _monitor(self, member: _Member) -> None:
        delay = self._min_delay
        while True:
            member.wake.clear()
            if await self._probe(member):
                delay = self._min_delay
                await self._pull_missing(member)
                timeout = self._interval
            else:
                timeout = delay
                delay = min(delay * 2, self._interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await member.wake.wait()

    async def _probe(self, member: _Member) -> bool:
        """List the backend's models; one probe at a time per backend (callers share it)."""
        if member.probing is None or member.probing.done():
            member.probing = asyncio.create_task(self._probe_once(member))
        return await asyncio.shield(member.probing)

    async def _probe_once(self, member: _Member) -> bool:
        try:
            names = await member.backend.list_models()
        except ModelError as exc:
            self._mark_down(member, exc)
            return False
        self._mark_up(member, names)
        return True

    def _mark_down(self, member: _Member, exc: ModelError) -> None:
        if member.state is not BackendHealth.DOWN:
            how = "not reachable" if exc.cause is Cause.UNREACHABLE else "failing"
            log.warning("backend %s is down: %s (%s); it leaves the pool until a probe succeeds",
                        member.backend.label, how, exc.detail,
                        extra={"event": "backend_down", "backend": member.name})
        member.state = BackendHealth.DOWN
        self._sync(member)

    def _mark_up(self, member: _Member, names: Sequence[str]) -> None:
        present = {model_key(n): n for n in names}
        member.served = {m: present[model_key(m)] for m in self.models if model_key(m) in present}
        missing = [m for m in self.models if m not in member.served]
        now = time.monotonic()
        if self._pull and member.backend.can_pull:
            for m in missing:
                if m not in member.pull_retry or member.pull_retry[m][0] <= now:
                    member.pulling.setdefault(m, 0)
        else:
            reported = frozenset(missing)
            if reported and reported != member.reported_missing:
                log.warning("backend %s does not offer %s; requests for %s are not routed there",
                            member.name, ", ".join(missing),
                            "it" if len(missing) == 1 else "them",
                            extra={"event": "backend_missing_model", "backend": member.name})
            member.reported_missing = reported
        if member.state is not BackendHealth.UP:
            offered = ", ".join(member.served) or "none of the allowed models"
            back = "is back" if member.state is BackendHealth.DOWN else "is up"
            log.info("backend %s %s (models: %s); it is in the pool", member.backend.label, back,
                     offered, extra={"event": "backend_up", "backend": member.name})
        member.state = BackendHealth.UP
        self._sync(member)

    def _serving(self, member: _Member) -> set[str]:
        return {m for m in member.served if m not in member.pulling}

    def _sync(self, member: _Member) -> None:
        """Tell the scheduler what the backend serves now; log model-level changes."""
        self.scheduler.set_resource(member.name, member.backend.max_parallel,
                                    serves=self._serving(member),
                                    healthy=member.state is BackendHealth.UP)
        servable = {m for m in self.models if self.scheduler.capacity(m) > 0}
        for m in self.models:
            if m in servable and m not in self._servable:
                backends = [n for n, x in self._members.items()
                            if x.state is BackendHealth.UP and m in self._serving(x)]
                log.info("model ready: %s (backends: %s)", m, ", ".join(backends),
                         extra={"event": "model_ready", "model": m})
            elif m not in servable and m in self._servable:
                log.warning("model unavailable: %s (no healthy backend offers it)", m,
                            extra={"event": "model_unavailable", "model": m})
        self._servable = servable

    # ------------------------------------------------------------------ pulls
    async def _pull_missing(self, member: _Member) -> None:
        pulled = False
        for model in [m for m in self.models if m in member.pulling]:
            name = member.name

            def say(line: str, name: str = name) -> None:
                log.info("backend %s: %s", name, line, extra={"event": "model_pull",
                                                                "backend": name})

            def progress(percent: int, model: str = model) -> None:
                member.pulling[model] = percent

            try:
                await member.backend.pull(model, say, progress)
            except ModelError as exc:
                _, delay = member.pull_retry.get(model, (0.0, MIN_PULL_DELAY / 2))
                delay = min(delay * 2, MAX_PULL_DELAY)
                member.pull_retry[model] = (time.monotonic() + delay, delay)
                log.warning("backend %s: pulling %s failed (%s); trying again in %.0f s",
                            name, model, exc.detail, delay,
                            extra={"event": "model_pull_failed", "backend": name})
            else:
                member.pull_retry.pop(model, None)
                pulled = True
                say(f"model {model} is available")
            finally:
                member.pulling.pop(model, None)
                self._sync(member)
        if pulled:
            await self._probe(member)  # learn the pulled models' names
