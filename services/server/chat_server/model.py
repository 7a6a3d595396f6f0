"""The model client: the official ``ollama.AsyncClient``, made robust.

``ollama`` 0.6.x leaves most failures raw (docs/MODEL-APIS.md, Ollama): a refused
connection while streaming is a bare ``httpx.ConnectError``, a cut stream an
``httpx.RemoteProtocolError``, a stall a ``ReadTimeout``, a stream without a
``done`` line just stops. ``ModelClient`` turns every one of them into one of
two exceptions whose ``str()`` is a short sentence safe to show a user:

- ``ModelUnavailable``: nothing was generated and trying again later may work
  (service down or unreachable, model missing, service busy);
- ``ModelFailed``: the answer broke (error line, cut stream, stall, garbage).

``.detail`` keeps the technical text for the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx
import ollama
import pydantic

__all__ = [
    "ModelChunk",
    "ModelClient",
    "ModelError",
    "ModelFailed",
    "ModelUnavailable",
]

LogFn = Callable[[str], None]
State = Literal["starting", "pulling", "ready", "unavailable"]

# User-facing sentences: short, no URLs, no exception names.
UNREACHABLE = "The model service is not reachable right now. Please try again later."
MISSING = "The model is not available on the model service yet. Please try again later."
BUSY = "The model service is busy. Please try again in a moment."
BROKEN = "The model stopped with an error before finishing its answer."
CUT = "The connection to the model service was lost before the answer was complete."
STALLED = "The model took too long to answer."
GARBLED = "The model service sent a reply that could not be read."
REFUSED = "The model service refused the request."
PULL_FAILED = "The model could not be downloaded."


class ModelError(Exception):
    """Base class; ``str(exc)`` is for users, ``exc.detail`` for logs."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message


class ModelUnavailable(ModelError):
    """No answer could be started: service down, model missing, or busy."""


class ModelFailed(ModelError):
    """The answer started (or the request was accepted) but broke."""


@dataclass(frozen=True, slots=True)
class ModelChunk:
    """A piece of the answer; the last one has ``done=True`` and the token counts."""

    text: str
    done: bool = False
    done_reason: str | None = None
    prompt_tokens: int | None = None
    answer_tokens: int | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def classify(exc: BaseException) -> ModelError:
    """Map any exception raised by the ollama client (or httpx under it) to a ModelError."""
    detail = _describe(exc)
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        code = exc.status_code
        if code == 404:
            return ModelUnavailable(MISSING, detail)
        if code in (429, 503):
            return ModelUnavailable(BUSY, detail)
        if code == -1:  # an {"error": ...} line in a 200 stream
            return ModelFailed(BROKEN, detail)
        if code in (502, 504):  # a proxy in front of Ollama could not reach it
            return ModelUnavailable(UNREACHABLE, detail)
        if 400 <= code < 500:
            return ModelFailed(REFUSED, detail)
        return ModelFailed(BROKEN, detail)
    # ConnectTimeout is a TimeoutException, not a ConnectError; the builtin
    # ConnectionError is what ollama raises for a refused non-streaming request.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectionError
                  | httpx.UnsupportedProtocol):
        return ModelUnavailable(UNREACHABLE, detail)
    if isinstance(exc, httpx.PoolTimeout):
        return ModelUnavailable(BUSY, detail)
    if isinstance(exc, httpx.TimeoutException):
        return ModelFailed(STALLED, detail)
    if isinstance(exc, httpx.TransportError):  # RemoteProtocolError, ReadError, ...
        return ModelFailed(CUT, detail)
    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError | ValueError
                  | TypeError | AttributeError | KeyError | UnicodeDecodeError):
        return ModelFailed(GARBLED, detail)
    return ModelFailed(BROKEN, detail)


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


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


class ModelClient:
    """One model behind one Ollama host.

    ``state`` is ``starting`` -> ``pulling`` (only if the model is missing) ->
    ``ready``; ``unavailable`` while the service cannot be reached or the model
    cannot be used. ``state_detail`` is a sentence for user notices.
    """

    def __init__(self, host: str | None, model: str, *, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, keep_alive: float | str | None = None,
                 options: dict[str, Any] | None = None,
                 retry_interval: tuple[float, float] = (0.25, 5.0)) -> None:
        self.model = model
        self.keep_alive = keep_alive
        self.options = options
        self.retry_interval = retry_interval
        # ollama's default is timeout=None: no connect or read timeout at all.
        self._client = ollama.AsyncClient(
            host=host, timeout=httpx.Timeout(read_timeout, connect=connect_timeout))
        self.ready = False
        self.state: State = "starting"
        self.state_detail = "The model service is starting."
        self._ensure_lock = asyncio.Lock()
        self._waiter: asyncio.Task[None] | None = None
        # Set by wait_ready_forever: the server wants readiness to recover by itself.
        self._recover: tuple[LogFn | None, bool] | None = None

    @property
    def host(self) -> str:
        """The resolved base URL (for logs only; never show it to users)."""
        return str(self._client._client.base_url)

    async def aclose(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiter
        await self._client._client.aclose()

    def _set(self, state: State, detail: str) -> None:
        self.state, self.state_detail = state, detail
        self.ready = state == "ready"

    # -- readiness ---------------------------------------------------------------------
    async def ensure_model(self, log: LogFn | None = None, *,
                           retry_for: float | None = 0.0, pull: bool = True) -> None:
        """Make sure the model is present, pulling it (with progress lines) if not.

        While the service is unreachable, retry with backoff for ``retry_for``
        seconds (``None``: forever; ``0``: one attempt), then raise ModelUnavailable.
        A failed pull, or a missing model with ``pull=False``, raises
        ModelUnavailable at once.
        """
        say = log or (lambda _line: None)
        async with self._ensure_lock:
            deadline = None if retry_for is None else time.monotonic() + retry_for
            delay, reported = self.retry_interval[0], False
            while True:
                try:
                    present = await self._present()
                    break
                except ModelError as exc:
                    self._set("unavailable", str(exc))
                    if deadline is not None and time.monotonic() + delay > deadline:
                        raise
                    if not reported:
                        say(f"model service at {self.host} not reachable ({exc.detail}); "
                            "retrying")
                        reported = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_interval[1])
            if reported:
                say(f"model service at {self.host} is reachable")
            if not present and not pull:
                self._set("unavailable", MISSING)
                raise ModelUnavailable(MISSING, f"model {self.model} is not present on the"
                                                " model service and pulling is disabled")
            if not present:
                await self._pull(say)
            self._set("ready", "The model is ready.")
            say(f"model {self.model} is available")

    async def _present(self) -> bool:
        """True if the model exists; raises ModelError if the service can't tell us."""
        try:
            await self._client.show(self.model)
            return True
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return False
            raise classify(exc) from None
        except Exception as exc:
            raise classify(exc) from None

    async def _pull(self, say: LogFn) -> None:
        self._set("pulling", f"The model {self.model} is being downloaded.")
        say(f"model {self.model} not present; pulling it")
        throttle, status = _Throttle(), ""
        try:
            # ollama annotates AsyncIterator, but returns an async generator (it has aclose).
            stream = cast(AsyncGenerator[ollama.ProgressResponse, None],
                          await self._client.pull(self.model, stream=True))
            async with contextlib.aclosing(stream) as parts:
                async for part in parts:
                    status = part.status or ""
                    line, percent = f"pulling {self.model}: {status}", None
                    if part.total and part.completed is not None:
                        percent = min(100, part.completed * 100 // part.total)
                        line += (f" {percent}% ({_size(part.completed)} /"
                                 f" {_size(part.total)})")
                    if percent is not None:
                        self.state_detail = (f"The model {self.model} is being downloaded"
                                             f" ({percent}%).")
                    # A layer's 100% line is always shown, so the log never stops at 97%.
                    if throttle.due(status, finished=percent == 100):
                        say(line)
        except Exception as exc:
            err = classify(exc)
            self._set("unavailable", PULL_FAILED)
            raise ModelUnavailable(PULL_FAILED, f"pull {self.model}: {err.detail}") from None
        if status != "success":
            self._set("unavailable", PULL_FAILED)
            raise ModelUnavailable(PULL_FAILED, f"pull {self.model} ended with {status!r}")

    async def wait_ready_forever(self, log: LogFn | None = None, *, pull: bool = True) -> None:
        """Retry ``ensure_model`` until it succeeds (run it as a background task at start).

        Concurrent callers share one attempt. Failed pulls are retried with a
        longer backoff; unreachable services are polled by ``ensure_model``.
        From then on, when a chat finds the service gone or the model missing,
        the client goes ``unavailable`` and starts this loop again by itself, so
        ``ready`` comes back once the service does.
        """
        self._recover = (log, pull)
        await asyncio.shield(self._start_waiter())

    def _start_waiter(self) -> asyncio.Task[None]:
        if self._waiter is None or self._waiter.done():
            log, pull = self._recover or (None, True)
            self._waiter = asyncio.create_task(self._wait_loop(log, pull))
        return self._waiter

    async def _wait_loop(self, log: LogFn | None, pull: bool) -> None:
        delay = 1.0
        while True:
            try:
                await self.ensure_model(log, retry_for=None, pull=pull)
                return
            except ModelError as exc:
                if log is not None:
                    log(f"model not ready: {exc.detail}; retrying in {delay:.0f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    # -- chat --------------------------------------------------------------------------
    async def chat(self, messages: list[dict[str, Any]], *,
                   system: str | None = None) -> AsyncGenerator[ModelChunk, None]:
        """Stream the answer: text chunks, then one ``done=True`` chunk with the counts.

        Use it as ``async with contextlib.aclosing(client.chat(...)) as chunks``:
        closing it early closes the HTTP stream, so Ollama stops generating.
        """
        payload = [{"role": "system", "content": system}] if system else []
        payload += [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            stream = cast(AsyncGenerator[ollama.ChatResponse, None], await self._client.chat(
                model=self.model, messages=payload, stream=True, keep_alive=self.keep_alive,
                options=self.options))
        except Exception as exc:  # e.g. pydantic rejecting the request itself
            raise self._failed(exc) from None
        final: ModelChunk | None = None
        async with contextlib.aclosing(stream) as parts:
            while final is None:
                # Only errors from the stream are mapped; whatever the consumer
                # throws in at ``yield`` (GeneratorExit, CancelledError) passes.
                try:
                    part = await anext(parts)
                except StopAsyncIteration:
                    raise self._failed(ModelFailed(
                        CUT, "the stream ended without a done line")) from None
                except Exception as exc:
                    raise self._failed(exc) from None
                text = part.message.content or ""
                if part.done:
                    final = ModelChunk(text="", done=True, done_reason=part.done_reason,
                                       prompt_tokens=part.prompt_eval_count,
                                       answer_tokens=part.eval_count)
                if text:
                    yield ModelChunk(text)
        if self.state != "pulling":
            self._set("ready", "The model is ready.")
        yield final

    def _failed(self, exc: BaseException) -> ModelError:
        err = classify(exc)
        # A missing model or dead service makes us not ready (but never while pulling);
        # in server mode the readiness loop starts again to notice its return.
        if isinstance(err, ModelUnavailable) and err.message != BUSY and self.state != "pulling":
            self._set("unavailable", err.message)
            if self._recover is not None:
                self._start_waiter()
        return err
