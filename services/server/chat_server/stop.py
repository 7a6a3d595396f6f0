"""
chat_server.stop
~~~~~~~~~~~~~~~~

Why an answer, or a whole session, stops before its end: :class:`StopReason`,
shared by the turn that stops (:mod:`chat_server.turn`), the session and
service that stop it, and the account watch that decides a session's login no
longer holds (:mod:`chat_server.accounts`).
"""

from __future__ import annotations

import enum

from .store import TurnStatus

__all__ = ["ACCOUNT_ENDED_MESSAGE", "PASSWORD_CHANGED_MESSAGE", "StopReason"]

#: The ``session_revoked`` message (a text for the user, not a reason: see
#: :attr:`StopReason.revocation`) that ends a disabled or removed user's answer
#: in flight, and session.
ACCOUNT_ENDED_MESSAGE = "your session was ended: this account has been disabled or removed"
#: The one that ends those of a user whose password was changed after they logged in.
PASSWORD_CHANGED_MESSAGE = ("your session was ended: the password of this account was "
                            "changed; log in with the new one")


class StopReason(enum.Enum):
    """Why a turn stopped before its answer was complete (the value: for the log)."""

    #: The user sent CANCEL for it.
    CANCELLED = "cancelled by the user"
    #: The connection closed (EOF, reset, a peer that stopped reading).
    DISCONNECTED = "connection closed"
    #: The user said BYE while it ran.
    CLIENT_BYE = "client said bye"
    #: The server is stopping and the grace period ran out.
    SHUTDOWN = "server shutdown"
    #: The user's account was disabled or removed (chat_server.accounts).
    ACCOUNT_ENDED = "the account was disabled or removed"
    #: The user's password was changed after this session logged in.
    PASSWORD_CHANGED = "the password was changed"
    #: The client read the answer more slowly than the model wrote it for too
    #: long (chat_server/coalesce.py): the generation was stopped to free the model.
    SLOW_READER = "the client reads too slowly"

    @property
    def status(self) -> TurnStatus:
        """The stored turn status: only the user's own cancel is ``cancelled``."""
        return TurnStatus.CANCELLED if self is StopReason.CANCELLED else TurnStatus.INTERRUPTED

    @property
    def revocation(self) -> str | None:
        """The ``session_revoked`` message of a reason that ends the session
        (the account's state changed); ``None`` for the others."""
        return _REVOCATIONS.get(self)


_REVOCATIONS = {
    StopReason.ACCOUNT_ENDED: ACCOUNT_ENDED_MESSAGE,
    StopReason.PASSWORD_CHANGED: PASSWORD_CHANGED_MESSAGE,
}
