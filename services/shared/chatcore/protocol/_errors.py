"""
chatcore.protocol._errors
~~~~~~~~~~~~~~~~~~~~~~~~~

Errors split by blame, as in h11 and wsproto: :exc:`LocalProtocolError` means
*we* misused the codec; :exc:`RemoteProtocolError` means the *peer* sent bytes
that break the protocol. Any other exception escaping the codec is a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import ErrorCode

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Abstract base. ``code`` is the :class:`ErrorCode` an adapter should send
    back (``reply_hint``); ``str(exc)`` is a short, safe, human reason."""

    def __init__(self, msg: str, code: ErrorCode | None = None) -> None:
        if type(self) is ProtocolError:
            raise TypeError("tried to directly instantiate ProtocolError")
        super().__init__(msg)
        if code is None:
            from ._events import ErrorCode

            code = ErrorCode.PROTOCOL_ERROR
        self.code = code


class LocalProtocolError(ProtocolError):
    """Our side did something the protocol forbids (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids. After this the connection
    is in the ERROR state; send ``conn.error_reply(exc)`` and close."""
