"""What every backend kind provides, and the pieces of an answer it streams."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import httpx

from ..config import BackendKind, model_key

__all__ = [
    "Backend",
    "BackendKind",
    "LogFn",
    "Message",
    "ModelChunk",
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
