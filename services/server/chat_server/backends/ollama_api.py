"""An Ollama backend through the official ``ollama.AsyncClient``.

What the client leaves raw and how it is mapped is in docs/MODEL-APIS.md:
error statuses are ``ollama.ResponseError`` (``status_code == -1`` for an
``{"error": ...}`` line in a 200 stream), transport failures are bare httpx
exceptions, and a stream that ends without a ``done`` line just stops, so the
client checks for it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import cast

import httpx
import ollama

from .base import (
    Backend,
    BackendKind,
    LogFn,
    Message,
    ModelChunk,
    ReadDeadline,
    connection_limits,
)
from .errors import (
    Cause,
    ModelError,
    ModelFailed,
    ModelUnavailable,
    describe,
    from_status,
    from_transport,
)

__all__ = ["OllamaBackend", "classify"]

#: After the done line: how long, and how many more lines, the rest of the
#: response may take before the connection is given up (see _read_to_end).
DRAIN_SECONDS = 1.0
DRAIN_LINES = 4


def classify(exc: BaseException) -> ModelError:
    """Map anything the ollama client (or httpx under it) raises to a ModelError."""
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == -1:  # an {"error": ...} line in a 200 stream
            return ModelFailed(Cause.BROKEN, describe(exc))
        return from_status(exc.status_code, describe(exc))
    return from_transport(exc) or ModelFailed(Cause.BROKEN, describe(exc))


class _Throttle:
    """Progress lines at most every ``interval`` seconds, except on a new status."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last_status: str | None = None
        self.last_time = 0.0

    def due(self, status: str, *, finished: bool = False) -> bool:
        """True if a line for ``status`` should be logged now (``finished``: always)."""
        now = time.monotonic()
        if finished or status != self.last_status or now - self.last_time >= self.interval:
            self.last_status, self.last_time = status, now
            return True
        return False


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _StreamClients:
    """The official clients the generations stream through: one per generation
    in flight, each with a pool of one connection, lent out last-in first-out
    (so answers one after another reuse one warm connection).

    Why not one client for all: httpx's connection pool looks at every one of
    its connections whenever a request starts or a response ends (is it idle,
    has it expired: a ``getpeername`` and a ``poll`` on its socket each, and a
    count of the pool for each idle one), so with ``CHAT_MAX_PARALLEL=50`` that
    was 50 to 2,500 checks per event, 10-17 % of the server's CPU under load
    (docs/BENCHMARKS.md, "Throughput"). Here each request checks its own one
    connection. The pool's scheduler never grants a backend more generations at
    once than its ``max_parallel``, so there are never more clients than that;
    they share one TLS context (loading the CA bundle is ~30 ms a client)."""

    __slots__ = ("_all", "_idle", "_make")

    def __init__(self, make: Callable[[], ollama.AsyncClient]) -> None:
        self._make = make
        self._idle: list[ollama.AsyncClient] = []
        self._all: list[ollama.AsyncClient] = []

    def take(self) -> ollama.AsyncClient:
        if self._idle:
            return self._idle.pop()
        client = self._make()
        self._all.append(client)
        return client

    def give(self, client: ollama.AsyncClient) -> None:
        self._idle.append(client)

    def __len__(self) -> int:
        return len(self._all)

    async def aclose(self) -> None:
        clients, self._all, self._idle = self._all, [], []
        for client in clients:
            await client.close()


class OllamaBackend(Backend):
    kind = BackendKind.OLLAMA
    can_pull = True

    def __init__(self, name: str, url: str | None, *, max_parallel: int = 2,
                 api_key: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0) -> None:
        super().__init__(name, url, max_parallel=max_parallel)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        # ollama's default is timeout=None: no connect or read timeout at all.
        # Every phase is bounded: connect, and read, write and a wait for a
        # pooled connection by the read timeout; a generation's lines also by
        # ReadDeadline (bytes that make no line don't count).
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        # httpx's default TLS context (CA bundle, SSL_CERT_FILE/SSL_CERT_DIR), made once.
        tls = httpx.create_ssl_context()
        # The model list, probes and pulls.
        self._client = ollama.AsyncClient(host=url, headers=headers, timeout=timeout,
                                          verify=tls, limits=connection_limits(0))
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._streams = _StreamClients(lambda: ollama.AsyncClient(
            host=url, headers=headers, timeout=timeout, verify=tls, limits=one))

    async def aclose(self) -> None:
        await self._client.close()
        await self._streams.aclose()

    async def list_models(self) -> list[str]:
        # The whole listing within connect + read: a body that comes a byte at a
        # time would keep the probe (and a request that waits on it) for ever.
        limit = self._connect_timeout + self._read_timeout
        try:
            async with asyncio.timeout(limit):
                listing = await self._client.list()
        except TimeoutError:
            raise ModelFailed(Cause.STALLED, f"the model list took over {limit:g} s") from None
        except Exception as exc:
            raise classify(exc) from None
        return [m.model for m in listing.models if m.model]

    async def pull(self, model: str, say: LogFn, progress: Callable[[int], None]) -> None:
        say(f"model {model} not present; pulling it")
        throttle, status = _Throttle(), ""
        try:
            # ollama annotates AsyncIterator, but returns an async generator (it has aclose).
            stream = cast(AsyncGenerator[ollama.ProgressResponse, None],
                          await self._client.pull(model, stream=True))
            async with contextlib.aclosing(stream) as parts:
                async for part in parts:
                    status = part.status or ""
                    line, percent = f"pulling {model}: {status}", None
                    if part.total and part.completed is not None:
                        percent = min(100, part.completed * 100 // part.total)
                        line += (f" {percent}% ({_size(part.completed)} /"
                                 f" {_size(part.total)})")
                        progress(percent)
                    # A layer's 100% line is always shown, so the log never stops at 97%.
                    if throttle.due(status, finished=percent == 100):
                        say(line)
        except Exception as exc:
            err = classify(exc)
            raise ModelUnavailable(Cause.PULL_FAILED, f"pull {model}: {err.detail}") from None
        if status != "success":
            raise ModelUnavailable(Cause.PULL_FAILED, f"pull {model} ended with {status!r}")

    async def chat(self, model: str, messages: Sequence[Message], *,
                   answer_model: str | None = None) -> AsyncGenerator[ModelChunk, None]:
        tag, name = answer_model or model, self.name
        payload = [{"role": m["role"], "content": m["content"]} for m in messages]
        client = self._streams.take()
        # The first line comes after connecting and the response head.
        deadline = ReadDeadline(self._read_timeout,
                                first=self._connect_timeout + self._read_timeout)
        try:
            try:
                stream = cast(AsyncGenerator[ollama.ChatResponse, None], await client.chat(
                    model=model, messages=payload, stream=True))
            except Exception as exc:  # connect errors surface here, before any byte
                raise classify(exc) from None
            final: ModelChunk | None = None
            async with contextlib.aclosing(stream) as parts:
                while final is None:
                    # Only errors from the stream are mapped; whatever the consumer
                    # throws in at ``yield`` (GeneratorExit, CancelledError) passes.
                    try:
                        part = await deadline.read(anext(parts))
                    except TimeoutError as exc:
                        raise ModelFailed(Cause.STALLED, str(exc)) from None
                    except StopAsyncIteration:
                        raise ModelFailed(Cause.CUT,
                                          "the stream ended without a done line") from None
                    except Exception as exc:
                        raise classify(exc) from None
                    text = part.message.content or ""
                    if part.done:
                        final = ModelChunk("", True, part.done_reason, part.prompt_eval_count,
                                           part.eval_count, name, tag)
                    if text:
                        yield ModelChunk(text, backend=name, model=tag)
                yield final
                await _read_to_end(parts)
        finally:
            deadline.close()
            # Its response is closed (read to the end, or cut and its connection
            # with it): the client is free for the next generation.
            self._streams.give(client)


async def _read_to_end(parts: AsyncGenerator[ollama.ChatResponse, None]) -> None:
    """Read the response past the done line to its end, so that the HTTP
    connection goes back to the client's pool for the next request: closing a
    response before its end closes the connection, and every answer would pay
    for a new one (docs/BENCHMARKS.md, "Throughput"). Ollama ends the response
    right after the done line; a service that sends more, or holds the response
    open, costs at most :data:`DRAIN_LINES` lines or :data:`DRAIN_SECONDS`, then
    the connection is closed as before. The answer is complete: nothing here is
    an error."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            for _ in range(DRAIN_LINES):
                await anext(parts)
