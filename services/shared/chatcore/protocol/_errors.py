"""
chatcore.protocol._errors
~~~~~~~~~~~~~~~~~~~~~~~~~

Errors split by blame, as in h11 and wsproto: :exc:`LocalProtocolError` means
*we* misused the codec; :exc:`RemoteProtocolError` means the *peer* sent bytes
that break the protocol. Any other exception escaping the codec is a bug.
Each carries the :class:`ErrorCode` an ``ERROR`` frame would send back.
"""

from __future__ import annotations

import enum

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = ["FATAL_CODES", "ErrorCode", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ErrorCode(enum.StrEnum):
    """Stable, machine-readable error codes (v2 ``ERROR`` frames).

    The string values are part of the wire format; never rename one.
    """

    #: The peer sent bytes that are not a valid frame (fatal).
    PROTOCOL_ERROR = "protocol_error"
    #: A frame header announced a body larger than the negotiated limit (fatal).
    FRAME_TOO_LARGE = "frame_too_large"
    #: The client offered no protocol version the server speaks (fatal).
    UNSUPPORTED_VERSION = "unsupported_version"
    #: A frame type that is not allowed in the current state (fatal).
    UNEXPECTED_FRAME = "unexpected_frame"
    #: Authentication did not complete in time (fatal).
    AUTH_TIMEOUT = "auth_timeout"
    #: Too many failed attempts; try again later (fatal).
    AUTH_THROTTLED = "auth_throttled"
    #: No frame for too long (fatal).
    IDLE_TIMEOUT = "idle_timeout"
    #: The server is at its connection limit (fatal).
    TOO_MANY_CONNECTIONS = "too_many_connections"
    #: The server is stopping (fatal).
    SHUTTING_DOWN = "shutting_down"
    #: The server accepts v2 only over TLS; reconnect with TLS (fatal).
    TLS_REQUIRED = "tls_required"
    #: The server ended this logged-in session: the account was disabled or
    #: removed (fatal). Logging in again fails like a wrong password while it stays so.
    SESSION_REVOKED = "session_revoked"
    #: Messages per minute exceeded; the message was not processed.
    RATE_LIMITED = "rate_limited"
    #: An answer to an earlier message on this connection is in flight; this one was not processed.
    BUSY = "busy"
    #: The message was refused by moderation (banned words, personal data).
    REFUSED = "refused"
    #: The message is longer than the server accepts.
    MESSAGE_TOO_LONG = "message_too_long"
    #: The model is being pulled or loaded; try again shortly.
    MODEL_LOADING = "model_loading"
    #: The model service cannot be reached or refused the request.
    MODEL_UNAVAILABLE = "model_unavailable"
    #: The model service failed while answering (error line, cut stream, stall).
    MODEL_ERROR = "model_error"
    #: The CHAT named a model the server does not offer; the message was not processed.
    UNKNOWN_MODEL = "unknown_model"
    #: A bug on the server; details are in its log, not on the wire.
    INTERNAL_ERROR = "internal_error"


#: Error codes after which the sender closes the connection.
FATAL_CODES = frozenset(
    {
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNEXPECTED_FRAME,
        ErrorCode.AUTH_TIMEOUT,
        ErrorCode.AUTH_THROTTLED,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.TOO_MANY_CONNECTIONS,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.TLS_REQUIRED,
        ErrorCode.SESSION_REVOKED,
    }
)


class ProtocolError(Exception):
    """Abstract base. ``code`` is the :class:`ErrorCode` an adapter should send
    back (``reply_hint``); ``str(exc)`` is a short, safe, human reason."""

    def __init__(self, msg: str, code: ErrorCode | None = None) -> None:
        if type(self) is ProtocolError:
            raise TypeError("tried to directly instantiate ProtocolError")
        super().__init__(msg)
        self.code = ErrorCode.PROTOCOL_ERROR if code is None else code


class LocalProtocolError(ProtocolError):
    """Our side did something the protocol forbids (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids. After this the connection
    is in the ERROR state; send ``conn.error_reply(exc)`` and close."""
