"""What every backend kind provides, and the pieces of an answer it streams."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import httpx

from ..config import BackendKind, model_key

T = TypeVar("T")

__all__ = [
    "Backend",
    "BackendKind",
    "LogFn",
    "Message",
    "ModelChunk",
    "ReadDeadline",
    "connection_limits",
    "model_key",
]

#: Requests besides the generations that may run at once on a backend: the
#: health probe and a model pull.
SIDE_REQUESTS = 2


def connection_limits(max_parallel: int) -> httpx.Limits:
    """The HTTP connection pool of a backend's client, sized for its generations.

    httpx keeps 20 idle connections by default. With more generations than
    that at once (``CHAT_MAX_PARALLEL=50``), every answer that ends while 20
    connections are idle closes its connection, and a later request opens a
    new one: a TCP handshake and a connection's set-up and teardown in the
    server (and the model service) per answer (docs/BENCHMARKS.md,
    "Throughput"). One idle connection per possible generation, plus the side
    requests, keeps them all open. (The Ollama backend streams each generation
    through a client of its own, with one connection: ``max_parallel=0`` sizes
    its client for the side requests alone.)
    """
    keep = max_parallel + SIDE_REQUESTS
    return httpx.Limits(max_connections=max(keep, 100), max_keepalive_connections=keep)


class ReadDeadline:
    """A deadline for every read of one streamed answer: each piece (an NDJSON
    line, an SSE event) must arrive within ``seconds`` of asking for it, the
    first within ``first`` (it includes connecting and the response head).

    httpx's read timeout, like httpcore's, bounds each socket read, so a
    service that keeps sending bytes that make no piece (SSE ``: keep-alive``
    comments, whitespace) would hold its generation slot for ever. Only the
    time spent waiting for the service counts: while the answer waits for its
    reader (backpressure) the clock is stopped.

    Cheap per piece (no timer per read): one timer per stream re-armed when it
    fires, and a read that is over its deadline when it fires is cancelled,
    as ``asyncio.timeout`` cancels, and ends with :exc:`TimeoutError`. A
    cancellation from elsewhere passes through unchanged.
    """

    __slots__ = ("_expired", "_first", "_handle", "_limit", "_loop", "_reading", "_seconds",
                 "_started", "_task")

    def __init__(self, seconds: float, first: float | None = None) -> None:
        self._seconds = seconds
        self._first = seconds if first is None else first
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._reading = False
        self._started = 0.0
        self._limit = seconds
        self._expired = False

    async def read(self, piece: Awaitable[T]) -> T:
        """Await ``piece`` within the deadline (TimeoutError after it)."""
        limit, self._first = self._first, self._seconds
        self._started = now = self._loop.time()
        self._limit = limit
        self._task = asyncio.current_task()
        if self._handle is None or self._handle.when() > now + limit:
            self._arm(now + limit)
        self._reading = True
        try:
            return await piece
        except asyncio.CancelledError:
            task = self._task
            if self._expired and task is not None and task.uncancel() == 0:
                raise TimeoutError(f"nothing from the model service for {limit:g} s") from None
            raise
        finally:
            self._reading = False
            self._expired = False

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        due = self._started + self._limit
        if self._reading and now >= due and self._task is not None:
            self._expired = True
            self._handle = None
            self._task.cancel()
            return
        self._handle = self._loop.call_at(due if self._reading else now + self._seconds,
                                          self._check)

    def close(self) -> None:
        """Stop the timer (the stream ended or was closed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


LogFn = Callable[[str], None]
#: A chat message as the model sees it: ``{"role": ..., "content": ...}``.
Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class ModelChunk:
    """A piece of the answer; the last one has ``done=True`` and the token counts.

    ``backend`` and ``model`` say who answered (the backend's configured name
    and the model name the user asked for).
    """

    text: str
    done: bool = False
    done_reason: str | None = None
    prompt_tokens: int | None = None
    answer_tokens: int | None = None
    backend: str = ""
    model: str = ""


class Backend(ABC):
    """One model service. Implementations wrap an official client.

    Every method raises only :class:`~.errors.ModelError` subclasses (besides
    cancellation).
    """

    kind: ClassVar[BackendKind]
    #: Whether :meth:`pull` can download a missing model.
    can_pull: ClassVar[bool] = False

    def __init__(self, name: str, url: str | None, *, max_parallel: int) -> None:
        self.name = name
        self.url = url
        self.max_parallel = max_parallel

    @property
    def label(self) -> str:
        """``name (kind at url)`` for logs; never shown to users."""
        return f"{self.name} ({self.kind.value} at {self.url or 'default address'})"

    @abstractmethod
    async def list_models(self) -> Sequence[str]:
        """The names of the models the service has now (also the health probe)."""

    async def pull(self, model: str, say: LogFn, progress: Callable[[int], None]) -> None:
        """Download ``model``, logging progress lines through ``say`` and
        reporting percentages through ``progress``."""
        raise NotImplementedError(f"{self.kind.value} backends cannot pull models")

    @abstractmethod
    def chat(self, model: str, messages: Sequence[Message], *,
             answer_model: str | None = None) -> AsyncGenerator[ModelChunk, None]:
        """Stream the answer of ``model`` (the service's own name for it): text
        chunks, then one ``done=True`` chunk with the counts. Chunks carry
        ``answer_model`` (default: ``model``) as their ``model``.

        Use it as ``async with contextlib.aclosing(backend.chat(...))``:
        closing it early closes the HTTP stream, so the service stops
        generating. A stream that ends without the service saying it finished
        raises ModelFailed.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the client's connections."""
