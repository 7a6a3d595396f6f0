"""Model errors: two exceptions whose ``str()`` is a short sentence safe to show a user.

- :class:`ModelUnavailable`: nothing was generated and trying again later may
  work (service down or unreachable, model missing, service busy);
- :class:`ModelFailed`: the answer broke (error event, cut stream, stall,
  garbage) or the request was refused.

``.detail`` keeps the technical text for the logs. ``.retry_elsewhere`` says
whether another backend might answer the same request (everything except a
request the backend rejected as malformed). The pool fills in ``.backend``.

Both official clients leave many failures raw (docs/MODEL-APIS.md): a refused
connection while streaming is a bare ``httpx.ConnectError``, a cut stream an
``httpx.RemoteProtocolError``, a stall a ``ReadTimeout``. :func:`from_transport`
maps the httpx layer both clients share.
"""

from __future__ import annotations

import enum
import json

import httpx
import pydantic

__all__ = [
    "Cause",
    "ModelError",
    "ModelFailed",
    "ModelUnavailable",
    "describe",
    "from_status",
    "from_transport",
]

class Cause(enum.Enum):
    """Why a model request failed; the value is the sentence users see
    (short, no URLs, no exception names)."""

    UNREACHABLE = "The model service is not reachable right now. Please try again later."
    MISSING = "The model is not available on the model service yet. Please try again later."
    NO_BACKEND = "No model service offers this model right now. Please try again later."
    UNKNOWN_MODEL = "This model is not offered here."
    BUSY = "The model service is busy. Please try again in a moment."
    BROKEN = "The model stopped with an error before finishing its answer."
    CUT = "The connection to the model service was lost before the answer was complete."
    STALLED = "The model took too long to answer."
    GARBLED = "The model service sent a reply that could not be read."
    REFUSED = "The model service refused the request."
    PULL_FAILED = "The model could not be downloaded."


class ModelError(Exception):
    """Base class; ``str(exc)`` is for users, ``exc.detail`` for logs."""

    def __init__(self, cause: Cause, detail: str | None = None, *,
                 retry_elsewhere: bool = True) -> None:
        super().__init__(cause.value)
        self.cause = cause
        self.message = cause.value
        self.detail = detail or cause.value
        self.retry_elsewhere = retry_elsewhere
        self.backend: str | None = None  # set by the pool: which backend failed


class ModelUnavailable(ModelError):
    """No answer could be started: service down, model missing, or busy."""


class ModelFailed(ModelError):
    """The answer started (or the request was accepted) but broke, or was refused."""


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception, for ``.detail``."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def from_status(code: int, detail: str) -> ModelError:
    """An HTTP error status from a model service (before any byte of the answer)."""
    if code == 404:
        return ModelUnavailable(Cause.MISSING, detail)
    if code in (429, 503):
        return ModelUnavailable(Cause.BUSY, detail)
    if code in (502, 504):  # a proxy in front of the service could not reach it
        return ModelUnavailable(Cause.UNREACHABLE, detail)
    if code in (400, 413, 422):  # the request itself: another backend would refuse it too
        return ModelFailed(Cause.REFUSED, detail, retry_elsewhere=False)
    if 400 <= code < 500:  # 401/403 (a key), 408, 409, ...: another backend may accept it
        return ModelFailed(Cause.REFUSED, detail)
    return ModelFailed(Cause.BROKEN, detail)


def from_transport(exc: BaseException) -> ModelError | None:
    """Map an httpx / connection / decoding exception; None if it is none of those."""
    detail = describe(exc)
    # ConnectTimeout is a TimeoutException, not a ConnectError; the builtin
    # ConnectionError is what ollama raises for a refused non-streaming request.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectionError
                  | httpx.UnsupportedProtocol):
        return ModelUnavailable(Cause.UNREACHABLE, detail)
    if isinstance(exc, httpx.PoolTimeout):
        return ModelUnavailable(Cause.BUSY, detail)
    if isinstance(exc, httpx.TimeoutException):
        return ModelFailed(Cause.STALLED, detail)
    if isinstance(exc, httpx.TransportError):  # RemoteProtocolError, ReadError, ...
        return ModelFailed(Cause.CUT, detail)
    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError | ValueError
                  | TypeError | AttributeError | KeyError | UnicodeDecodeError):
        return ModelFailed(Cause.GARBLED, detail)
    return None
