"""The OpenAI-compatible endpoints: ``/v1/models`` and ``/v1/chat/completions``.

Shaped like llama.cpp's ``llama-server`` and OpenAI's API (docs/MODEL-APIS.md):
a streaming answer is Server-Sent Events (``text/event-stream``, one
``data: {json}`` event per chunk, a blank line after each): a first chunk with
the assistant role, one chunk per token with ``choices[0].delta.content``, a
chunk with ``finish_reason`` and an empty delta, then (when the request asked
``stream_options.include_usage``) a chunk with no choices and the ``usage``
counts, then ``data: [DONE]``. Errors before the first byte are real HTTP
statuses with ``{"error": {"message", "type", "code"}}``; after it, an
``error`` event and the end of the stream, as llama-server does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .answers import Plan, dumps

SSE = "text/event-stream"

#: OpenAI's error types by status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               404: "invalid_request_error", 500: "server_error", 503: "unavailable_error"}


def error_body(status: int, message: str, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                      "code": status if code is None else code}}


def models_body(names: list[str], created: float) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": int(created), "owned_by": "standin"}
                     for n in names]}


def event(obj: Any, *, raw_unicode: bool = False) -> bytes:
    """One SSE event carrying ``obj`` as JSON."""
    if raw_unicode:  # non-ASCII as raw UTF-8 (SSE splits only on CR and LF: that is fine)
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    else:
        data = dumps(obj)
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"


@dataclass
class Completion:
    """Builds the chunks of one chat completion."""

    model: str
    plan: Plan
    prompt_tokens: int
    serial: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def id(self) -> str:
        return f"chatcmpl-standin{self.serial}"

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def usage(self) -> dict[str, int]:
        n = len(self.plan.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n,
                "total_tokens": self.prompt_tokens + n}

    def usage_chunk(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "standin", "choices": [],
                "usage": self.usage()}

    def whole(self) -> dict[str, Any]:
        """The ``stream: false`` answer."""
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": "standin",
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": self.plan.text},
                             "logprobs": None, "finish_reason": self.plan.done_reason}],
                "usage": self.usage()}
