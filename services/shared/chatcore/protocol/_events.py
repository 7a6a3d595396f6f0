"""
chatcore.protocol._events
~~~~~~~~~~~~~~~~~~~~~~~~~

The typed events of the chat protocol. They are the same for v1 and v2: the
codec (``_connection.py``) maps them to each version's bytes, so the server and
the client handle one vocabulary whatever the peer speaks.

Events are frozen, slotted dataclasses that validate themselves in
``__post_init__``: an invalid event cannot exist (h11's rule), and building one
raises :exc:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from ._errors import FATAL_CODES, ErrorCode, LocalProtocolError

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = [
    "MAX_NAME_LENGTH",
    "AnswerDelta",
    "AnswerEnd",
    "AuthResult",
    "Authenticate",
    "Bye",
    "Cancel",
    "ChatMessage",
    "ClientHello",
    "ConnectionClosed",
    "EndReason",
    "Error",
    "Event",
    "Notice",
    "NoticeKind",
    "Ping",
    "Pong",
    "ServerHello",
    "frame_name",
    "name_problem",
    "without_controls",
]


class NoticeKind(enum.StrEnum):
    """What a ``NOTICE`` frame is about. The values are part of the wire format."""

    #: Waiting for a generation slot; ``position`` is 1 for "next".
    QUEUE = "queue"
    #: A banned word in the user's message (v1: warning + ``<GoodBye>`` + close).
    MODERATION = "moderation"
    #: Personal data (e-mail address, phone number) in the user's message.
    PRIVACY = "privacy"
    #: Personal data or banned words were masked in the model's answer.
    ANSWER_MASKED = "answer_masked"
    #: Older turns were left out of the model's context.
    CONTEXT_TRIMMED = "context_trimmed"
    #: The model is being pulled or loaded.
    MODEL_LOADING = "model_loading"
    #: Anything else worth showing the user.
    INFO = "info"


class EndReason(enum.StrEnum):
    """Why an answer ended (``END.reason``). An answer's ``reason`` is a plain
    string so that a newer peer's reason reaches the application unchanged
    (docs/PROTOCOL.md §4: an unknown reason reads as "the answer ended");
    these are the values this version sends."""

    #: The model finished its answer.
    STOP = "stop"
    #: The answer hit a length limit.
    LENGTH = "length"
    #: The client cancelled it (or it was cancelled before it started).
    CANCELLED = "cancelled"


class Event:
    """Base class of every protocol event. Don't subclass outside this module."""

    __slots__ = ()


def _json_kind(value: object) -> str:
    """What ``value`` is called in JSON (RFC 8259 §1), for an error text a peer
    may read: never a Python class name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "another kind of value"


def _check_str(name: str, value: object, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a string, not {_json_kind(value)}")
    if not allow_empty and not value:
        raise LocalProtocolError(f"{name} must not be empty")


#: The longest name on the wire, in characters (Unicode code points): conversation
#: ids, model and backend names, agent strings (docs/PROTOCOL.md §4). A server
#: keys its storage by some of them, so they are checked as frames arrive,
#: before anything is done with the message.
MAX_NAME_LENGTH = 256
#: C0 controls, DEL and C1 controls: no name may contain one.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def name_problem(value: str) -> str | None:
    """Why ``value`` can't be a name on the wire (a conversation id, a model or
    backend name, an agent string), or ``None`` when it can."""
    if len(value) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


#: The same controls except newline and tab, which text may keep.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def without_controls(text: str) -> str:
    """``text`` without control characters other than newline and tab.

    What a terminal would act on instead of showing: ESC starts sequences that
    move the cursor, clear the screen, set the window title or write the
    clipboard (OSC 52), CR returns to the start of the line and lets later text
    cover earlier text, and C1 controls (U+0080-U+009F, such as CSI U+009B) are
    escapes of their own on some terminals. The server drops them from v2
    answer text; the client drops them from everything it shows that a server
    sent (docs/PROTOCOL.md §4, "Text that is shown")."""
    return _TEXT_CONTROL.sub("", text) if _TEXT_CONTROL.search(text) else text


def _check_name(name: str, value: object, *, allow_empty: bool = True) -> None:
    _check_str(name, value, allow_empty=allow_empty)
    problem = name_problem(value)  # type: ignore[arg-type]  # checked to be a str
    if problem is not None:
        raise LocalProtocolError(f"{name} {problem}")


def _check_int(name: str, value: object, *, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be an integer, not {_json_kind(value)}")
    if value < minimum:
        raise LocalProtocolError(f"{name} must be >= {minimum}")


@dataclass(frozen=True, slots=True)
class ClientHello(Event):
    """v2 only: the client's first frame, offering protocol versions."""

    versions: tuple[int, ...] = (2,)
    #: Free-form client name and version, e.g. ``"chat-client/0.1.0"``.
    agent: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.versions, tuple) or not self.versions:
            raise LocalProtocolError("versions must be a non-empty tuple of ints")
        for v in self.versions:
            _check_int("version", v, minimum=1)
        _check_name("agent", self.agent)


@dataclass(frozen=True, slots=True)
class ServerHello(Event):
    """v2 only: the server's reply to :class:`ClientHello`."""

    version: int = 2
    agent: str = ""
    #: The default model: what answers a CHAT that names none, e.g. ``"llama3.2"``.
    model: str = ""
    #: Limits the client should respect, e.g. ``{"max_frame_bytes": 65536, ...}``.
    limits: dict[str, int] = field(default_factory=dict)
    #: The models a CHAT may name (the default among them); empty from older servers.
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_int("version", self.version, minimum=1)
        _check_name("agent", self.agent)
        _check_name("model", self.model)
        if not isinstance(self.models, tuple):
            raise LocalProtocolError("models must be a tuple")
        for name in self.models:
            _check_name("model name", name, allow_empty=False)
        if not isinstance(self.limits, dict):
            raise LocalProtocolError("limits must be a dict")
        for k, v in self.limits.items():
            _check_str("limit name", k, allow_empty=False)
            _check_int(f"limit {k}", v)


@dataclass(frozen=True, slots=True)
class Authenticate(Event):
    """Client credentials: a password, or (v2 only) a session token the
    server issued at an earlier login (docs/PROTOCOL.md §4). Exactly one of
    the two is given. v1 sends a password as two frames (username, password)."""

    user: str
    password: str | None = field(default=None, repr=False)
    #: A session token from an earlier :class:`AuthResult` (instead of a password).
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_str("user", self.user)
        if (self.password is None) == (self.token is None):
            raise LocalProtocolError("give exactly one of password and token")
        if self.password is not None:
            _check_str("password", self.password)
        if self.token is not None:
            _check_str("token", self.token, allow_empty=False)

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        kind = "password" if self.token is None else "token"
        return f"Authenticate(user={self.user!r}, {kind}=<hidden>)"


@dataclass(frozen=True, slots=True)
class AuthResult(Event):
    """The server's verdict. A failure never says whether the user exists.
    A successful v2 login may carry a session ``token`` for logging in again
    (after a reconnect) without the password."""

    ok: bool
    user: str = ""
    #: Human text; for a failure always the same generic sentence.
    message: str = ""
    #: A session token (v2, ``ok`` only); ``None``: none issued.
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise LocalProtocolError("ok must be bool")
        _check_str("user", self.user)
        _check_str("message", self.message)
        if self.token is not None:
            _check_str("token", self.token, allow_empty=False)
            if not self.ok:
                raise LocalProtocolError("a failed login carries no token")

    def __repr__(self) -> str:  # never show the token, even in a traceback
        token = "" if self.token is None else ", token=<hidden>"
        return f"AuthResult(ok={self.ok!r}, user={self.user!r}, message={self.message!r}{token})"


@dataclass(frozen=True, slots=True)
class ChatMessage(Event):
    """A user's message. ``message_id`` is chosen by the client (v1: numbered by
    the codec from 1); every answer frame for it carries the same id."""

    text: str
    conversation: str = ""
    message_id: int = 0
    #: The model to answer with (one of HELLO's ``models``); ``""``: the
    #: conversation's model, or the default for a new conversation.
    model: str = ""

    def __post_init__(self) -> None:
        _check_str("text", self.text)
        _check_name("conversation", self.conversation)
        _check_int("message_id", self.message_id)
        _check_name("model", self.model)


@dataclass(frozen=True, slots=True)
class AnswerDelta(Event):
    """A piece of the model's answer, sent as soon as it is known."""

    text: str
    message_id: int = 0

    def __post_init__(self) -> None:
        _check_str("text", self.text)
        _check_int("message_id", self.message_id)


@dataclass(frozen=True, slots=True)
class AnswerEnd(Event):
    """The answer to ``message_id`` is complete (or was cancelled)."""

    message_id: int = 0
    #: An :class:`EndReason` value; any other non-empty string from a newer peer.
    reason: str = EndReason.STOP.value
    #: Tokens of the model's input; 0 when not reported (after a cancel).
    prompt_tokens: int = 0
    #: Tokens the model produced (after a cancel: those produced before it stopped).
    answer_tokens: int = 0
    #: Milliseconds from receiving the message to its first answer byte.
    first_token_ms: int = 0
    #: Milliseconds from receiving the message to the end of the answer.
    total_ms: int = 0
    #: The model that answered (``""``: not reported).
    model: str = ""
    #: The name of the backend that answered (``""``: not reported).
    backend: str = ""

    def __post_init__(self) -> None:
        _check_int("message_id", self.message_id)
        _check_str("reason", self.reason, allow_empty=False)
        _check_name("model", self.model)
        _check_name("backend", self.backend)
        for name in ("prompt_tokens", "answer_tokens", "first_token_ms", "total_ms"):
            _check_int(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class Error(Event):
    """An error. With ``message_id`` set it ends that message's answer; fatal
    codes (see :data:`FATAL_CODES`) mean the sender closes the connection."""

    code: ErrorCode
    message: str = ""
    message_id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            raise LocalProtocolError("code must be an ErrorCode")
        _check_str("message", self.message)
        if self.message_id is not None:
            _check_int("message_id", self.message_id)

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """Information for the user that is not part of the answer."""

    kind: NoticeKind
    message: str = ""
    message_id: int | None = None
    #: For :attr:`NoticeKind.QUEUE`: 1 means next in line.
    position: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, NoticeKind):
            raise LocalProtocolError("kind must be a NoticeKind")
        _check_str("message", self.message)
        if self.message_id is not None:
            _check_int("message_id", self.message_id)
        if self.position is not None:
            _check_int("position", self.position, minimum=1)


@dataclass(frozen=True, slots=True)
class Cancel(Event):
    """v2 only: stop the answer to ``message_id``."""

    message_id: int = 0

    def __post_init__(self) -> None:
        _check_int("message_id", self.message_id)


@dataclass(frozen=True, slots=True)
class Ping(Event):
    """v2 only: liveness probe; the peer answers with :class:`Pong`."""

    nonce: str = ""

    def __post_init__(self) -> None:
        _check_str("nonce", self.nonce)


@dataclass(frozen=True, slots=True)
class Pong(Event):
    """v2 only: the answer to :class:`Ping`, echoing its nonce."""

    nonce: str = ""

    def __post_init__(self) -> None:
        _check_str("nonce", self.nonce)


@dataclass(frozen=True, slots=True)
class Bye(Event):
    """Orderly end of the session, from either side."""

    reason: str = ""

    def __post_init__(self) -> None:
        _check_str("reason", self.reason)


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """Returned by ``next_event()`` once the peer's EOF (``receive_data(b"")``)
    has been reached with no partial frame pending."""


#: The frame TYPE each event travels as (docs/PROTOCOL.md §4): the name an
#: error text gives it, since a peer knows the frames, not our classes.
_FRAME_TYPES: dict[type[Event], str] = {
    ClientHello: "HELLO",
    ServerHello: "HELLO",
    Authenticate: "AUTH",
    AuthResult: "AUTH_RESULT",
    ChatMessage: "CHAT",
    AnswerDelta: "DELTA",
    AnswerEnd: "END",
    Error: "ERROR",
    Notice: "NOTICE",
    Cancel: "CANCEL",
    Ping: "PING",
    Pong: "PONG",
    Bye: "BYE",
    ConnectionClosed: "EOF",
}


def frame_name(event: object) -> str:
    """``event``'s frame TYPE as docs/PROTOCOL.md names it (``HELLO``, ``CHAT``,
    ...; ``EOF`` for :class:`ConnectionClosed`), for error texts; anything that
    is not an event is "a value that is not a frame"."""
    name = _FRAME_TYPES.get(type(event)) if isinstance(event, Event) else None
    return name or "a value that is not a frame"
