"""An OpenAI-compatible backend (llama.cpp's llama-server, vLLM, LM Studio,
LocalAI, Ollama's own ``/v1``) through the official ``openai.AsyncOpenAI``.

Streaming chat completions with ``stream_options={"include_usage": True}``:
text arrives as ``choices[0].delta.content``, the end as a ``finish_reason``,
the token counts in a last chunk with ``usage`` and no choices, then
``data: [DONE]``. docs/MODEL-APIS.md has the details and how failures are
mapped. The client's own retries are off: the pool fails over to another
backend instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import httpx
import openai

from .base import Backend, BackendKind, Message, ModelChunk, ReadDeadline
from .errors import (
    Cause,
    ModelError,
    ModelFailed,
    ModelUnavailable,
    describe,
    from_status,
    from_transport,
)

__all__ = ["NO_KEY", "OpenAIBackend", "classify"]

#: The bearer token sent to a backend configured without a key.
NO_KEY = "no-key"


def classify(exc: BaseException) -> ModelError:
    """Map anything the openai client (or httpx under it) raises to a ModelError."""
    if isinstance(exc, ModelError):
        return exc
    detail = describe(exc)
    if isinstance(exc, openai.APIStatusError):
        return from_status(exc.status_code, detail)
    if isinstance(exc, openai.APITimeoutError):
        cause = exc.__cause__
        if isinstance(cause, httpx.ConnectTimeout):
            return ModelUnavailable(Cause.UNREACHABLE, f"{detail} ({describe(cause)})")
        return ModelFailed(Cause.STALLED, detail)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        mapped = from_transport(cause) if cause is not None else None
        if mapped is not None and not isinstance(mapped, ModelUnavailable):
            return mapped  # e.g. a read timeout or a cut before the response head
        return ModelUnavailable(Cause.UNREACHABLE, detail if cause is None
                                else f"{detail} ({describe(cause)})")
    if isinstance(exc, openai.APIResponseValidationError):
        return ModelFailed(Cause.BROKEN, detail)
    if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
        return ModelFailed(Cause.BROKEN, detail)
    return from_transport(exc) or ModelFailed(Cause.BROKEN, detail)


class OpenAIBackend(Backend):
    kind = BackendKind.OPENAI

    def __init__(self, name: str, url: str | None, *, max_parallel: int = 2,
                 api_key: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0) -> None:
        super().__init__(name, url, max_parallel=max_parallel)
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        # An explicit key and base URL: never OPENAI_API_KEY or OPENAI_BASE_URL
        # from the environment, so a key meant for one service is not sent to
        # another. The client insists on some key; servers started without one
        # (llama-server, vLLM, LM Studio) ignore whatever comes.
        self._client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY, base_url=url, max_retries=0,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout))
        # Connect, and read, write and the wait for a pooled connection by the
        # read timeout; a generation's events also by ReadDeadline (SSE
        # comments, which keep a stream's bytes coming, don't count).

    async def aclose(self) -> None:
        await self._client.close()

    async def list_models(self) -> list[str]:
        # The whole listing within connect + read (see OllamaBackend.list_models).
        limit = self._connect_timeout + self._read_timeout
        try:
            async with asyncio.timeout(limit):
                return [m.id async for m in self._client.models.list() if m.id]
        except TimeoutError:
            raise ModelFailed(Cause.STALLED, f"the model list took over {limit:g} s") from None
        except Exception as exc:
            raise classify(exc) from None

    async def chat(self, model: str, messages: Sequence[Message], *,
                   answer_model: str | None = None) -> AsyncGenerator[ModelChunk, None]:
        tag, name = answer_model or model, self.name
        payload = cast(Any, [{"role": m["role"], "content": m["content"]} for m in messages])
        try:
            stream = await self._client.chat.completions.create(
                model=model, messages=payload, stream=True,
                stream_options={"include_usage": True})
        except Exception as exc:  # connect errors and error statuses surface here
            raise classify(exc) from None
        finish: str | None = None
        usage: Any = None
        pieces = 0
        deadline = ReadDeadline(self._read_timeout)
        try:
            # Leaving the block (also at a consumer's close) closes the HTTP response.
            async with stream:
                while True:
                    try:
                        chunk = await deadline.read(anext(stream))
                    except StopAsyncIteration:
                        break
                    except TimeoutError as exc:
                        if finish is not None:  # as below: the answer is complete
                            break
                        raise ModelFailed(Cause.STALLED, str(exc)) from None
                    except Exception as exc:
                        if finish is not None:  # the answer is complete; only the tail broke
                            break
                        raise classify(exc) from None
                    try:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        choices = chunk.choices or []
                        choice = choices[0] if choices else None
                        text = (choice.delta.content or "") if choice is not None and choice.delta else ""
                        if choice is not None and choice.finish_reason:
                            finish = choice.finish_reason
                    except (AttributeError, TypeError, IndexError) as exc:
                        raise classify(exc) from None
                    if text:
                        pieces += 1
                        yield ModelChunk(text, backend=name, model=tag)
        finally:
            deadline.close()  # the timer goes with the stream, however it ends
        if finish is None:
            raise ModelFailed(Cause.CUT, "the stream ended without a finish_reason")
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        answer_tokens = getattr(usage, "completion_tokens", None)
        # Without usage (a server that ignores include_usage), count the pieces:
        # servers send one token per chunk.
        yield ModelChunk("", True, finish, prompt_tokens,
                         answer_tokens if answer_tokens is not None else pieces, name, tag)
