"""Model backends: Ollama and OpenAI-compatible services, pooled.

``BackendPool`` is what the server uses: discovery, pulls, health probes,
least-loaded routing through the fair scheduler, failover before the first
token. ``OllamaBackend`` and ``OpenAIBackend`` wrap the official clients;
every failure comes out as ``ModelUnavailable`` or ``ModelFailed`` whose
``str()`` is safe to show a user.
"""

from typing import TYPE_CHECKING, Any

from .base import Backend, Message, ModelChunk
from .errors import Cause, ModelError, ModelFailed, ModelUnavailable
from .ollama_api import OllamaBackend
from .pool import (
    Availability,
    BackendHealth,
    BackendPool,
    BackendStatus,
    ModelState,
    make_backend,
)

__all__ = [
    "Availability",
    "Backend",
    "BackendHealth",
    "BackendPool",
    "BackendStatus",
    "Cause",
    "Message",
    "ModelChunk",
    "ModelError",
    "ModelFailed",
    "ModelState",
    "ModelUnavailable",
    "OllamaBackend",
    "OpenAIBackend",
    "make_backend",
]

if TYPE_CHECKING:
    from .openai_api import OpenAIBackend


def __getattr__(name: str) -> Any:
    # OpenAIBackend on first use: importing the `openai` package costs about
    # 0.8 s of CPU (see make_backend), not worth paying without such a backend.
    if name == "OpenAIBackend":
        from .openai_api import OpenAIBackend

        return OpenAIBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
