"""
chatcore.protocol._v2
~~~~~~~~~~~~~~~~~~~~~

Reader and writer for protocol v2 (docs/PROTOCOL.md): every frame, both ways,
is a 64-byte ``TYPE LENGTH`` header followed by a UTF-8 JSON object.

Bodies are strict about what they need and lenient about what they don't
know: a missing or mistyped required key is a PROTOCOL_ERROR, unknown keys are
ignored, an unknown error code reads as ``internal_error`` and an unknown
notice kind as ``info`` (so a newer peer can add them without breaking us).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ._buffer import FrameLimits, ReceiveBuffer
from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._events import (
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    Error,
    Event,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    ServerHello,
    frame_name,
)
from ._header import HEADER_SIZE, encode_v2_frame, parse_v2_header
from ._state import Role, State

__all__: list[str] = []

#: The protocol version this module speaks.
VERSION = 2
#: Integers on the wire stay within what every JSON implementation represents
#: exactly (IEEE double), so a JavaScript client can implement the protocol.
MAX_INT = 2**53 - 1
#: Deepest nesting of arrays and objects a body may have; the body object
#: itself is level 1 (docs/PROTOCOL.md §3). Our frames need 2; the rest is
#: room for a newer peer's keys.
MAX_DEPTH = 32

_REQUIRED: Any = object()


# -- writing ------------------------------------------------------------------


def _optional(body: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        body[key] = value


def event_to_frame(event: Event) -> tuple[str, dict[str, Any]]:
    """The frame TYPE and JSON body of ``event``, keys in the documented order."""
    if isinstance(event, ClientHello):
        return "HELLO", {"versions": list(event.versions), "agent": event.agent}
    if isinstance(event, ServerHello):
        hello: dict[str, Any] = {"version": event.version, "agent": event.agent,
                                 "model": event.model}
        if event.models:  # absent from servers that offer no choice
            hello["models"] = list(event.models)
        hello["limits"] = dict(event.limits)
        return "HELLO", hello
    if isinstance(event, Authenticate):
        if event.token is not None:
            return "AUTH", {"user": event.user, "token": event.token}
        return "AUTH", {"user": event.user, "password": event.password}
    if isinstance(event, AuthResult):
        result: dict[str, Any] = {"ok": event.ok, "user": event.user, "message": event.message}
        _optional(result, "token", event.token)
        return "AUTH_RESULT", result
    if isinstance(event, ChatMessage):
        body: dict[str, Any] = {"id": event.message_id, "conversation": event.conversation}
        if event.model:  # absent: what clients that know no models send
            body["model"] = event.model
        body["text"] = event.text
        return "CHAT", body
    if isinstance(event, AnswerDelta):
        return "DELTA", {"id": event.message_id, "text": event.text}
    if isinstance(event, AnswerEnd):
        body = {
            "id": event.message_id,
            "reason": event.reason,
            "prompt_tokens": event.prompt_tokens,
            "answer_tokens": event.answer_tokens,
            "first_token_ms": event.first_token_ms,
            "total_ms": event.total_ms,
        }
        if event.model:
            body["model"] = event.model
        if event.backend:
            body["backend"] = event.backend
        return "END", body
    if isinstance(event, Error):
        body = {"code": event.code.value, "message": event.message}
        _optional(body, "id", event.message_id)
        return "ERROR", body
    if isinstance(event, Notice):
        body = {"kind": event.kind.value, "message": event.message}
        _optional(body, "id", event.message_id)
        _optional(body, "position", event.position)
        return "NOTICE", body
    if isinstance(event, Cancel):
        return "CANCEL", {"id": event.message_id}
    if isinstance(event, Ping):
        return "PING", {"nonce": event.nonce}
    if isinstance(event, Pong):
        return "PONG", {"nonce": event.nonce}
    if isinstance(event, Bye):
        return "BYE", {"reason": event.reason}
    raise LocalProtocolError(f"{frame_name(event)} can't be sent")


def encode_event(event: Event) -> bytes:
    frame_type, body = event_to_frame(event)
    # "replace": a lone surrogate in a str (it can't come from valid UTF-8 input)
    # becomes "?" rather than an exception in the middle of an answer.
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    return encode_v2_frame(frame_type, data)


# -- reading ------------------------------------------------------------------


def _invalid(frame_type: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"invalid {frame_type} frame: {why}", ErrorCode.PROTOCOL_ERROR)


#: Digits beyond which an integer literal is not converted to an ``int``: every
#: integer this protocol uses has at most 16 (2**53-1).
_MAX_INT_DIGITS = 20


def _parse_int(literal: str) -> int | float:
    """A JSON integer literal. One longer than :data:`_MAX_INT_DIGITS` digits is
    valid JSON of any length (RFC 8259 §6), but CPython's ``int()`` refuses more
    than 4300 digits and takes time quadratic in the length below that; it reads
    as an infinite float, so a known key refuses it as out of range and an
    unknown key ignores it like any other value (docs/PROTOCOL.md §3)."""
    if len(literal) > _MAX_INT_DIGITS + literal.startswith("-"):
        return float("-inf") if literal.startswith("-") else float("inf")
    return int(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 leaves duplicate names to the implementation: some keep the
    # first, most the last. A frame two readers would read differently is
    # refused instead (docs/PROTOCOL.md §3).
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey("duplicate key")
    return obj


#: A JSON escape of a UTF-16 surrogate (``\\ud800``..``\\udfff``): the only way a
#: lone surrogate gets into a decoded body (raw UTF-8 can't carry one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(obj: Any) -> bool:
    """True if any string of ``obj`` (a key or a value, at any depth, known or
    not) holds a lone surrogate, i.e. is not valid Unicode (iterative)."""
    stack: list[Any] = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _too_deep(obj: Any) -> bool:
    """True if arrays/objects nest deeper than :data:`MAX_DEPTH` (iterative)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


class _Body:
    """Typed access to a decoded JSON object, raising PROTOCOL_ERROR."""

    def __init__(self, frame_type: str, obj: dict[str, Any]) -> None:
        self.type = frame_type
        self.obj = obj

    def value(self, key: str, default: Any) -> Any:
        """The value of ``key`` as decoded (``default`` if absent or null)."""
        value = self.obj.get(key)
        if value is None:  # absent and null mean the same
            if default is _REQUIRED:
                raise _invalid(self.type, f"missing {key!r}")
            return default
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.value(key, default)
        if not isinstance(value, str):
            raise _invalid(self.type, f"{key!r} must be a string")
        _check_text(self.type, key, value)
        return value

    def optional_text(self, key: str) -> str | None:
        """A string value, or None when the key is absent or null."""
        return None if self.obj.get(key) is None else self.text(key)

    def number(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.value(key, default)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
            raise _invalid(self.type, f"{key!r} must be an integer in 0..2**53-1")
        return value

    def flag(self, key: str) -> bool:
        value = self.value(key, _REQUIRED)
        if not isinstance(value, bool):
            raise _invalid(self.type, f"{key!r} must be true or false")
        return value


def _check_text(frame_type: str, key: str, value: str) -> None:
    # JSON escapes can smuggle lone surrogates ("\ud800") past the UTF-8
    # check; they would blow up later in whoever encodes the text again.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(frame_type, f"{key!r} is not valid Unicode") from None


def _client_hello(b: _Body) -> Event:
    versions = b.value("versions", _REQUIRED)
    if not isinstance(versions, list) or not versions:
        raise _invalid(b.type, "'versions' must be a non-empty array")
    for v in versions:
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_INT:
            raise _invalid(b.type, "'versions' must hold positive integers")
    return ClientHello(versions=tuple(versions), agent=b.text("agent", ""))


def _server_hello(b: _Body) -> Event:
    limits = b.value("limits", {})
    if not isinstance(limits, dict):
        raise _invalid(b.type, "'limits' must be an object")
    for k, v in limits.items():
        _check_text(b.type, "limits", k)
        if not k or not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_INT:
            raise _invalid(b.type, "'limits' must map names to integers")
    models = b.value("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise _invalid(b.type, "'models' must be an array of non-empty strings")
    for m in models:
        _check_text(b.type, "models", m)
    return ServerHello(
        version=b.number("version"),
        agent=b.text("agent", ""),
        model=b.text("model", ""),
        limits=limits,
        models=tuple(models),
    )


def _error(b: _Body) -> Event:
    try:
        code = ErrorCode(b.text("code"))
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR  # a newer peer's code
    return Error(code=code, message=b.text("message", ""), message_id=b.number("id", None))


def _authenticate(b: _Body) -> Event:
    # A password or a session token, exactly one (docs/PROTOCOL.md §4).
    password, token = b.optional_text("password"), b.optional_text("token")
    if password is None and token is None:
        raise _invalid(b.type, "missing 'password' (or 'token')")
    if password is not None and token is not None:
        raise _invalid(b.type, "both 'password' and 'token'")
    return Authenticate(user=b.text("user"), password=password, token=token)


def _auth_result(b: _Body) -> Event:
    return AuthResult(
        ok=b.flag("ok"), user=b.text("user", ""), message=b.text("message", ""),
        token=b.optional_text("token"),
    )


def _notice(b: _Body) -> Event:
    try:
        kind = NoticeKind(b.text("kind"))
    except ValueError:
        kind = NoticeKind.INFO  # a newer peer's kind
    return Notice(
        kind=kind,
        message=b.text("message", ""),
        message_id=b.number("id", None),
        position=b.number("position", None),
    )


# (TYPE, sending role) -> decoder. A TYPE the sender may not send at all is
# still decoded (to its event) and then refused by the state table.
_DECODERS: dict[str, Callable[[_Body, Role], Event]] = {
    "HELLO": lambda b, r: _client_hello(b) if r is Role.CLIENT else _server_hello(b),
    "AUTH": lambda b, r: _authenticate(b),
    "AUTH_RESULT": lambda b, r: _auth_result(b),
    "CHAT": lambda b, r: ChatMessage(
        text=b.text("text"), conversation=b.text("conversation", ""), message_id=b.number("id"),
        model=b.text("model", ""),
    ),
    "DELTA": lambda b, r: AnswerDelta(text=b.text("text"), message_id=b.number("id")),
    "END": lambda b, r: AnswerEnd(
        message_id=b.number("id"),
        reason=b.text("reason", "stop"),
        prompt_tokens=b.number("prompt_tokens", 0),
        answer_tokens=b.number("answer_tokens", 0),
        first_token_ms=b.number("first_token_ms", 0),
        total_ms=b.number("total_ms", 0),
        model=b.text("model", ""),
        backend=b.text("backend", ""),
    ),
    "ERROR": lambda b, r: _error(b),
    "NOTICE": lambda b, r: _notice(b),
    "CANCEL": lambda b, r: Cancel(message_id=b.number("id")),
    "PING": lambda b, r: Ping(nonce=b.text("nonce", "")),
    "PONG": lambda b, r: Pong(nonce=b.text("nonce", "")),
    "BYE": lambda b, r: Bye(reason=b.text("reason", "")),
}


def decode_frame(frame_type: str, body: bytes, sender: Role) -> Event:
    """The event for one complete frame sent by ``sender``."""
    decoder = _DECODERS.get(frame_type)
    if decoder is None:
        raise RemoteProtocolError("unknown frame type", ErrorCode.UNEXPECTED_FRAME)
    try:
        obj = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            object_pairs_hook=_object_without_duplicates,
        )
    except _DuplicateKey:
        raise _invalid(frame_type, "duplicate key in body") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: "[[[[…" nested deeper than the interpreter's stack.
        raise _invalid(frame_type, "body is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise _invalid(frame_type, "body is not a JSON object")
    # Cheap test first: fewer brackets than the limit can't nest too deep.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(obj):
        raise _invalid(frame_type, f"body nested deeper than {MAX_DEPTH} levels")
    # A lone surrogate is refused wherever it is, in unknown keys too: the body
    # is not valid Unicode text, and a stricter JSON parser (Rust's serde_json,
    # Go's with replacement) would read it differently (docs/PROTOCOL.md §3).
    # Cheap test first: no surrogate escape, no lone surrogate.
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(obj):
        raise _invalid(frame_type, "body holds a lone surrogate (not valid Unicode)")
    try:
        return decoder(_Body(frame_type, obj), sender)
    except LocalProtocolError as exc:  # the event refused a value (h11's rule)
        raise _invalid(frame_type, str(exc)) from None


class V2Codec:
    """Both roles of v2 (the protocol is symmetric apart from HELLO bodies).

    Legality is the state table's business (``_state.py`` Rule 5); this class
    only refuses a HELLO whose versions can't work, which is about versions,
    not about order."""

    # One per connection: no instance dict (docs/BENCHMARKS.md, idle connections).
    __slots__ = ("_buffer", "_hello_sent", "_limits", "_role")

    version = VERSION

    def __init__(self, role: Role, buffer: ReceiveBuffer, limits: FrameLimits) -> None:
        self._role = role
        self._buffer = buffer
        self._limits = limits
        # Not a legality rule (the table has those): a client whose HELLO was
        # never sent has no v2 peer to talk to, so its last words are silent.
        self._hello_sent = False

    def read(self, state: State) -> Event | None:
        buf = self._buffer
        header = parse_v2_header(buf.peek(HEADER_SIZE), self._limits.current)
        if header is None:
            return None
        frame_type, length = header
        if len(buf) < HEADER_SIZE + length:
            return None
        buf.skip(HEADER_SIZE)
        body = buf.take(length)
        event = decode_frame(frame_type, body, self._role.peer)
        if isinstance(event, ClientHello) and VERSION not in event.versions:
            raise RemoteProtocolError(
                "no common protocol version (this server speaks 2)",
                ErrorCode.UNSUPPORTED_VERSION,
            )
        if isinstance(event, ServerHello) and event.version != VERSION:
            raise RemoteProtocolError(
                "the server chose a protocol version this client does not speak",
                ErrorCode.UNSUPPORTED_VERSION,
            )
        return event

    def write(self, event: Event, state: State) -> tuple[bytes, list[Event]]:
        if isinstance(event, ClientHello):
            if VERSION not in event.versions:
                raise LocalProtocolError("a v2 connection must offer version 2")
            self._hello_sent = True
        if isinstance(event, ServerHello) and event.version != VERSION:
            raise LocalProtocolError("a v2 connection must choose version 2")
        if isinstance(event, (Bye, Error)) and self._role is Role.CLIENT and not self._hello_sent:
            return b"", []  # nobody listens (after our last word the connection says nothing)
        return encode_event(event), []

    def error_reply(self, exc: RemoteProtocolError, state: State) -> bytes:
        if self._role is Role.CLIENT and not self._hello_sent:
            # A client that has not sent its HELLO: the server would take any
            # other first frame for an error.
            return b""
        return encode_event(Error(code=exc.code, message=str(exc)))

    def data_to_send(self) -> bytes:
        return b""  # v2 has no automatic replies
