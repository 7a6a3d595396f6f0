"""
chat_client.turn
~~~~~~~~~~~~~~~~

One chat turn: send a message, follow its answer to the end. Shared by the
one-shot mode and the interactive UI, which differ only in how they show the
pieces (the callbacks) and in whether Ctrl-C cancels (``interrupted``).

The outcome is a value, not an exception, so the interactive UI can show it
and carry on, while the one-shot mode turns it into an exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    Bye,
    ConnectionClosed,
    EndReason,
    Error,
    ErrorCode,
    Notice,
    NoticeKind,
)

from .connection import ChatConnection
from .errors import AuthFailed, ClientError, ConnectionLost, Refused, ServerError

__all__ = ["REFUSAL_NOTICES", "TurnOutcome", "run_turn"]

#: Notices that mean "your message was refused" rather than "for your information".
REFUSAL_NOTICES = frozenset({NoticeKind.MODERATION, NoticeKind.PRIVACY})

#: How often the wait loop wakes up to check for Ctrl-C and refresh the screen.
TICK = 0.1


@dataclass
class TurnOutcome:
    message_id: int
    text: str = ""
    end: AnswerEnd | None = None
    error: Error | None = None
    #: The refusal notice text, when the server refused the message.
    refusal: str | None = None
    notices: list[Notice] = field(default_factory=list)
    #: Set when the connection is gone after this turn (lost, or closed by the
    #: server after a v1 moderation warning).
    failure: ClientError | None = None
    #: False when the message could not even be written (the connection was
    #: known to be gone): the server never saw it, so sending it again is safe.
    sent: bool = True

    @property
    def cancelled(self) -> bool:
        """The answer ended with ``END`` reason ``cancelled`` (the user's Ctrl-C, or
        the server stopped it), not as a refusal."""
        return (self.refusal is None and self.end is not None
                and self.end.reason == EndReason.CANCELLED)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.error is None and self.refusal is None

    def raise_for_status(self) -> None:
        """Turn a failed outcome into its :class:`ClientError` (one-shot mode)."""
        if self.refusal is not None:
            raise Refused(self.refusal)
        if isinstance(self.failure, AuthFailed):  # the session was revoked
            raise self.failure
        if self.error is not None:
            text = self.error.message or self.error.code.value.replace("_", " ")
            if self.error.code is ErrorCode.REFUSED:
                raise Refused(text)
            raise ServerError(f"server error ({self.error.code.value}): {text}")
        if self.failure is not None:
            raise self.failure


def _matches(event_id: int | None, message_id: int) -> bool:
    # None: a connection-wide event; 0: a peer that does not number messages.
    return event_id is None or event_id in (0, message_id)


def run_turn(
    conn: ChatConnection,
    text: str,
    *,
    conversation: str = "",
    model: str = "",
    timeout: float = 300.0,
    on_delta: Callable[[str], None],
    on_notice: Callable[[Notice], None] = lambda n: None,
    on_tick: Callable[[], None] = lambda: None,
    interrupted: Callable[[], bool] = lambda: False,
    on_interrupt: Callable[[bool], None] = lambda cancelled: None,
) -> TurnOutcome:
    """Send ``text`` and follow its answer until its end, an error or a lost connection.

    ``timeout`` is the longest silence we accept from the server while waiting.
    ``interrupted()`` is polled every :data:`TICK`; when it turns true once, a
    v2 ``CANCEL`` is sent (``on_interrupt(True)``); on v1, which cannot cancel,
    ``on_interrupt(False)`` tells the UI so and we keep reading.
    """
    try:
        message_id = conn.send_message(text, conversation, model)
    except ConnectionLost as exc:
        return TurnOutcome(message_id=0, failure=exc, sent=False)
    out = TurnOutcome(message_id=message_id)
    parts: list[str] = []
    asked_to_cancel = False
    last_heard = time.monotonic()
    try:
        while True:
            if not asked_to_cancel and interrupted():
                asked_to_cancel = True
                on_interrupt(conn.cancel(message_id))
            event = conn.poll(TICK)
            if event is None:
                on_tick()
                if time.monotonic() - last_heard > timeout:
                    out.failure = ConnectionLost(
                        f"no answer from {conn.address} for {timeout:g} seconds"
                    )
                    return out
                continue
            last_heard = time.monotonic()
            if isinstance(event, AnswerDelta):
                if _matches(event.message_id, message_id):
                    parts.append(event.text)
                    on_delta(event.text)
            elif isinstance(event, Notice):
                out.notices.append(event)
                if event.kind in REFUSAL_NOTICES and _matches(event.message_id, message_id):
                    out.refusal = event.message or "the server refused the message"
                on_notice(event)
            elif isinstance(event, AnswerEnd):
                if _matches(event.message_id, message_id):
                    out.end = event
                    return out
            elif isinstance(event, Error):
                if event.fatal or _matches(event.message_id, message_id):
                    out.error = event
                    if event.code is ErrorCode.SESSION_REVOKED:
                        # The account was disabled or removed, or its password changed:
                        # reconnecting with the session token won't help.
                        # The server's message says so itself ("your session was ended: ...").
                        out.failure = AuthFailed(event.message or "the server ended the session")
                    elif event.fatal:
                        out.failure = ConnectionLost(
                            f"the server closed the connection: {event.message or event.code.value}"
                        )
                    return out
            elif isinstance(event, Bye | ConnectionClosed):
                # v1 moderation: warning, <GoodBye>, close - a refusal, not a loss.
                out.failure = ConnectionLost(
                    f"the server closed the connection (connection to {conn.address} lost)"
                )
                return out
            # Anything else (a stray hello, a Pong) is not part of this turn.
    except ConnectionLost as exc:
        out.failure = exc
        return out
    finally:
        out.text = "".join(parts)
