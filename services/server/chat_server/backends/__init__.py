"""Model backends: Ollama and OpenAI-compatible services, pooled.

``BackendPool`` is what the server uses: discovery, pulls, health probes,
least-loaded routing through the fair scheduler, failover before the first
token. ``OllamaBackend`` and ``OpenAIBackend`` wrap the official clients;
every failure comes out as ``ModelUnavailable`` or ``ModelFailed`` whose
``str()`` is safe to show a user.
"""

from .base import Backend, Message, ModelChunk
from .errors import Cause, ModelError, ModelFailed, ModelUnavailable
from .ollama_api import OllamaBackend
from .openai_api import OpenAIBackend
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
