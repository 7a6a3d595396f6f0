"""
chatcore.protocol._v1
~~~~~~~~~~~~~~~~~~~~~

Readers and writers for the original protocol ("v1", docs/PROTOCOL.md §9),
byte-exact with the original client and server.

v1 is asymmetric: the client sends length-prefixed frames, the server answers
with bare strings during login and with fixed 64-byte chunks afterwards. So
there is one codec per role. Both are driven by :class:`~._connection.Connection`,
which owns the state: a codec parses from the shared
:class:`~._buffer.ReceiveBuffer`, is told the current state, and never changes
it (``_state.py`` Rule 1): ``write()`` returns the bytes plus the events they
*imply* (e.g. the v1 moderation reply ends with ``<GoodBye>``, so it implies
:class:`Bye`), and the connection applies them. Automatic replies (the login
dance) wait in the codec's outbox until ``data_to_send()``.
"""

from __future__ import annotations

import codecs
import re
from collections import deque

from anyascii import anyascii

from ._buffer import FrameLimits, ReceiveBuffer
from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._events import (
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    ChatMessage,
    Error,
    Event,
    Notice,
    NoticeKind,
    Ping,
    frame_name,
)
from ._header import HEADER_SIZE, encode_v1_frame, parse_v1_header
from ._state import State

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = [
    "V1_CUSS_WARNING",
    "V1_DISCONNECTED",
    "V1_GOODBYE",
    "V1_INVALID_PASSWORD",
    "V1_INVALID_USERNAME",
    "V1_PASSWORD_ACCEPTED",
    "V1_TERMINATOR",
    "V1_USERNAME_ACCEPTED",
]

# The exact bytes of the original server (docs/PROTOCOL.md §9). Login replies are
# bare (no header, no padding); the warning and <GoodBye> are padded chunks.
V1_USERNAME_ACCEPTED = b" username accepted"
V1_PASSWORD_ACCEPTED = b" password accepted"
V1_INVALID_USERNAME = b"invalid username : closing connection"
V1_INVALID_PASSWORD = b"invalid password : closing connection"
V1_GOODBYE = b"<GoodBye>"
V1_DISCONNECTED = b"[DISCONNECTED]disconnected from server"
V1_CUSS_WARNING = b"[WARNING] use of cuss words are not allowed"
#: Ends every answer: one chunk of 64 spaces.
V1_TERMINATOR = b" " * HEADER_SIZE

CHUNK_SIZE = HEADER_SIZE
_ERROR_PREFIX = b"[ERROR] "
_MAX_SPACE_RUN = CHUNK_SIZE - 1
_LONG_SPACE_RUN = re.compile(f" {{{CHUNK_SIZE},}}")
# Printable ASCII plus \n and \t: what the original client can print safely.
_NOT_PRINTABLE = re.compile(r"[^\n\t\x20-\x7e]")


def pad(chunk: bytes) -> bytes:
    """Right-pad to one 64-byte chunk."""
    return chunk.ljust(CHUNK_SIZE, b" ")


def to_v1_text(text: str) -> str:
    """Transliterate to printable ASCII for the original client.

    The original server crashed on any non-ASCII answer (docs/PROTOCOL.md §9.1,
    "Known defects"); the original client decodes ASCII only. anyascii turns
    “x” into "x" and café into cafe; control characters other than \\n and \\t
    are dropped (they could move the terminal's cursor).
    """
    return _NOT_PRINTABLE.sub("", anyascii(text))


def _guard(chunk: bytes) -> bytes:
    """Make sure an answer chunk can't be read as a control chunk by a client.

    The original client ends an answer on 64 spaces and the session on a chunk
    whose ``strip()`` is ``<GoodBye>``; our v1 client also recognises the
    cuss-word warning and a leading ``[ERROR] ``. Model text must never forge
    one of them, so the rare colliding chunk gets one letter's case changed.
    (64 spaces can't occur: :class:`_ChunkWriter` caps space runs at 63.)
    """
    if chunk.strip() == V1_GOODBYE:
        chunk = chunk.replace(V1_GOODBYE, b"<Goodbye>")
    if chunk.rstrip() == V1_CUSS_WARNING:
        chunk = chunk.replace(b"[WARNING]", b"[Warning]", 1)
    if chunk.startswith(_ERROR_PREFIX):
        chunk = b"[Error] " + chunk[len(_ERROR_PREFIX) :]
    return chunk


class _ChunkWriter:
    """Cuts a streamed text into 64-byte chunks, emitting each complete chunk
    at once (so the first tokens reach the user before the answer is done)."""

    def __init__(self, *, guard_first: bool = True) -> None:
        self._pending = bytearray()
        # False for an [ERROR] reply, whose first chunk must keep its marker.
        self._guard_next = guard_first
        # Spaces at the end of everything fed so far, emitted or not: a run of
        # 64 would be a complete chunk of spaces, i.e. a forged terminator.
        self._space_run = 0

    def _collapse(self, text: str) -> str:
        lead = len(text) - len(text.lstrip(" "))
        keep = min(lead, _MAX_SPACE_RUN - self._space_run)
        if lead == len(text):
            self._space_run += keep
            return " " * keep
        text = " " * keep + _LONG_SPACE_RUN.sub(" " * _MAX_SPACE_RUN, text[lead:])
        self._space_run = len(text) - len(text.rstrip(" "))
        return text

    def feed(self, text: str) -> bytes:
        self._pending += self._collapse(to_v1_text(text)).encode("ascii")
        n = len(self._pending) - len(self._pending) % CHUNK_SIZE
        if not n:
            return b""
        out = b"".join(
            self._emit(bytes(self._pending[i : i + CHUNK_SIZE])) for i in range(0, n, CHUNK_SIZE)
        )
        del self._pending[:n]
        return out

    def _emit(self, chunk: bytes) -> bytes:
        guard, self._guard_next = self._guard_next, True
        return _guard(chunk) if guard else chunk

    def finish(self) -> bytes:
        """The last, padded chunk, or nothing if only spaces are left (a padded
        chunk of spaces would be the terminator)."""
        rest = bytes(self._pending)
        self._pending.clear()
        self._space_run = 0
        if not rest.rstrip(b" "):
            return b""
        return self._emit(pad(rest))


def _error_chunks(code: ErrorCode, message: str) -> bytes:
    """``[ERROR] code: message`` as padded chunks. Only the first chunk may
    start with ``[ERROR] ``: that is what marks it as an error for our client."""
    writer = _ChunkWriter(guard_first=False)
    text = f"[ERROR] {code.value}: {message}".replace("\n", " ")
    return writer.feed(text) + writer.finish()


_LOGIN = frozenset({State.AUTHENTICATING, State.VERIFYING})


class V1ServerCodec:
    """The server side of v1: reads the client's frames, writes bare login
    replies and 64-byte answer chunks.

    Where the login stands is the connection's state (``_state.py``):
    AUTHENTICATING until the password frame completes the
    :class:`Authenticate`, VERIFYING until the verdict is sent. The codec
    only holds the user name between the two frames of that one event."""

    version = 1

    def __init__(self, buffer: ReceiveBuffer, limits: FrameLimits) -> None:
        self._buffer = buffer
        self._limits = limits
        self._outbox = bytearray()
        # The first half of the Authenticate being read (None: not arrived).
        self._user: str | None = None
        self._message_id = 0
        self._answer = _ChunkWriter()
        # Which of v1's two goodbyes our Bye is: the answer to the client's
        # <GoodBye>, or our own (the wire format differs, not the legality).
        self._peer_said_bye = False

    # -- reading ----------------------------------------------------------

    def _read_frame(self) -> bytes | None:
        buf = self._buffer
        length = parse_v1_header(buf.peek(HEADER_SIZE), self._limits.current)
        if length is None or len(buf) < HEADER_SIZE + length:
            return None
        buf.skip(HEADER_SIZE)
        return buf.take(length)

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def read(self, state: State) -> Event | None:
        while True:
            if state is State.VERIFYING:
                # The original client waits for the verdict before it sends
                # anything else, and the frame limit depends on the verdict:
                # parse nothing until it is sent, and refuse a flood meanwhile.
                if len(self._buffer) > HEADER_SIZE + self._limits.unauthenticated:
                    raise RemoteProtocolError("data sent before the login verdict")
                return None
            body = self._read_frame()
            if body is None:
                return None
            text = body.decode("utf-8", errors="replace")
            if state is State.AUTHENTICATING:
                if self._user is None:
                    self._user = text
                    # Whatever the name: a separate "invalid username" reply
                    # would tell an attacker which names exist.
                    self._outbox += V1_USERNAME_ACCEPTED
                    continue
                return Authenticate(user=self._user, password=text)
            if body == V1_GOODBYE:
                self._peer_said_bye = True
                return Bye()
            self._message_id += 1
            return ChatMessage(text=text, conversation="", message_id=self._message_id)

    # -- writing ----------------------------------------------------------

    def _login_refusal(self, state: State) -> bytes:
        if state is State.AUTHENTICATING and self._user is None:
            return V1_INVALID_USERNAME
        return V1_INVALID_PASSWORD

    @staticmethod
    def _closing(data: bytes) -> tuple[bytes, list[Event]]:
        """``data`` ends the session: it implies our Bye (the connection
        records it as our last word)."""
        return data, [Bye()]

    def write(self, event: Event, state: State) -> tuple[bytes, list[Event]]:
        if isinstance(event, AuthResult):
            # The state table allows a verdict in VERIFYING only.
            if event.token is not None:
                raise LocalProtocolError("protocol v1 cannot carry a session token")
            if event.ok:
                return V1_PASSWORD_ACCEPTED, []
            return self._login_refusal(state), []
        if isinstance(event, AnswerDelta):
            return self._answer.feed(event.text), []
        if isinstance(event, AnswerEnd):
            return self._answer.finish() + V1_TERMINATOR, []
        # A Bye or Error after our last word never gets here: the connection
        # answers it with nothing (_state.py Rule 4).
        if isinstance(event, Error):
            if state is State.CLOSED:
                return b"", []  # after the client's <GoodBye>: v1 can't say it
            if state in _LOGIN:
                return self._closing(self._login_refusal(state))
            data = self._answer.finish() + _error_chunks(event.code, event.message)
            if event.fatal:
                # Like the moderation reply: the original client stops on
                # <GoodBye> instead of prompting on a closed connection.
                return data + pad(V1_GOODBYE), []
            return data + V1_TERMINATOR, []
        if isinstance(event, Notice):
            if event.kind is not NoticeKind.MODERATION:
                return b"", []  # v1 has no notices: informational, dropped
            if state in _LOGIN:
                return self._closing(self._login_refusal(state))
            data = self._answer.finish() + pad(V1_CUSS_WARNING) + pad(V1_GOODBYE)
            return self._closing(data)
        if isinstance(event, Bye):
            if self._peer_said_bye:
                return V1_DISCONNECTED, []
            if state in _LOGIN:
                return self._login_refusal(state), []
            if state is State.CHATTING:
                # Our own goodbye (e.g. shutdown): a bare [DISCONNECTED] would
                # be read as an answer chunk by the original client.
                return self._answer.finish() + pad(V1_GOODBYE), []
            return b"", []
        if isinstance(event, Ping):
            return b"", []  # informational: v1 has no liveness probe
        raise LocalProtocolError(f"{frame_name(event)} can't be expressed in protocol v1")

    def error_reply(self, exc: RemoteProtocolError, state: State) -> bytes:
        if state in _LOGIN:
            return self._login_refusal(state)
        if state is State.CHATTING:
            return self._answer.finish() + _error_chunks(exc.code, str(exc)) + pad(V1_GOODBYE)
        return b""


class V1ClientCodec:
    """The client side of v1 (our client's ``--protocol v1``): writes frames,
    reads bare login replies and 64-byte answer chunks.

    Where the login stands is the connection's state: nothing is read in
    AUTHENTICATING, the two bare replies that make up one
    :class:`AuthResult` in VERIFYING, chunks afterwards. The codec only holds
    the password until the user name is accepted."""

    version = 1

    def __init__(self, buffer: ReceiveBuffer) -> None:
        self._buffer = buffer
        self._outbox = bytearray()
        self._user = ""
        # Sent once the user name is accepted; None once sent.
        self._password: str | None = None
        self._message_id = 0
        self._bye_sent = False
        self._queued: deque[Event] = deque()
        # Answer parsing state.
        self._held = ""  # trailing spaces of the last chunk: padding or text?
        self._error: list[bytes] | None = None  # chunks of an [ERROR] reply
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    # -- reading ----------------------------------------------------------

    def _reply(self, accepted: bytes, refused: bytes) -> bytes | None:
        """One bare login reply. Known replies are matched as prefixes so a
        reply split over several reads works; anything else counts as
        accepted, as in the original client (which did one recv(64))."""
        buf = self._buffer
        for known in (accepted, refused):
            if buf.startswith(known):
                buf.skip(len(known))
                return known
        if not buf:
            return None
        if not buf.eof and (buf.is_prefix_of(accepted) or buf.is_prefix_of(refused)):
            return None
        return buf.take(min(len(buf), CHUNK_SIZE))

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def read(self, state: State) -> Event | None:
        buf = self._buffer
        while True:
            if self._queued:
                return self._queued.popleft()
            if state is State.AUTHENTICATING:
                return None  # the server says nothing before the user name
            if state is State.VERIFYING and self._password is not None:
                reply = self._reply(V1_USERNAME_ACCEPTED, V1_INVALID_USERNAME)
                if reply is None:
                    return None
                if reply == V1_INVALID_USERNAME:
                    self._password = None
                    return AuthResult(False, self._user, V1_INVALID_USERNAME.decode())
                self._outbox += encode_v1_frame(self._password.encode("utf-8", "replace"))
                self._password = None
                continue
            if state is State.VERIFYING:
                reply = self._reply(V1_PASSWORD_ACCEPTED, V1_INVALID_PASSWORD)
                if reply is None:
                    return None
                if reply == V1_INVALID_PASSWORD:
                    return AuthResult(False, self._user, V1_INVALID_PASSWORD.decode())
                message = reply.decode("utf-8", errors="replace").strip()
                return AuthResult(True, self._user, message)
            if self._bye_sent and buf:
                if buf.startswith(V1_DISCONNECTED):
                    buf.skip(len(V1_DISCONNECTED))
                    return Bye()
                if buf.is_prefix_of(V1_DISCONNECTED) and not buf.eof:
                    return None
            if len(buf) < CHUNK_SIZE:
                return None
            chunk = buf.take(CHUNK_SIZE)
            event = self._chunk(chunk)
            if event is not None:
                return event

    def _end_answer(self) -> None:
        self._held = ""
        self._error = None
        self._decoder.reset()

    def _error_event(self) -> Error:
        assert self._error is not None
        text = b"".join(self._error).decode("utf-8", errors="replace").rstrip()
        text = text[len(_ERROR_PREFIX) :]
        # "[ERROR] code: message"; an empty message leaves "code:" after rstrip.
        code_text, sep, message = text.partition(":")
        try:
            code = ErrorCode(code_text) if sep else ErrorCode.INTERNAL_ERROR
        except ValueError:
            code = ErrorCode.INTERNAL_ERROR
        message = message.removeprefix(" ") if sep else text
        return Error(code=code, message=message, message_id=self._message_id)

    def _chunk(self, chunk: bytes) -> Event | None:
        if chunk == V1_TERMINATOR:
            event: Event = (
                self._error_event()
                if self._error is not None
                else AnswerEnd(message_id=self._message_id)
            )
            self._end_answer()
            return event
        if chunk.strip() == V1_GOODBYE:
            if self._error is not None:
                self._queued.append(self._error_event())
            self._end_answer()
            self._queued.append(Bye(reason="goodbye"))
            return self._queued.popleft()
        if self._error is not None:
            self._error.append(chunk)
            return None
        if chunk.rstrip() == V1_CUSS_WARNING:
            self._end_answer()
            return Notice(kind=NoticeKind.MODERATION, message=V1_CUSS_WARNING.decode())
        if chunk.startswith(_ERROR_PREFIX):
            self._end_answer()
            self._error = [chunk]
            return None
        text = self._decoder.decode(chunk)
        body = text.rstrip(" ")
        # Trailing spaces are padding if the next chunk is the terminator and
        # answer text otherwise: hold them until we know.
        out = self._held + body if body else ""
        self._held = self._held + text if not body else text[len(body) :]
        if out:
            return AnswerDelta(text=out, message_id=self._message_id)
        return None

    # -- writing ----------------------------------------------------------

    def write(self, event: Event, state: State) -> tuple[bytes, list[Event]]:
        if isinstance(event, Authenticate):
            # The state table allows one, in AUTHENTICATING.
            if event.password is None:
                raise LocalProtocolError("protocol v1 logs in with a password only (no token)")
            self._user = event.user
            self._password = event.password  # sent once the username is accepted
            return encode_v1_frame(event.user.encode("utf-8", "replace")), []
        if isinstance(event, ChatMessage):
            if event.text == V1_GOODBYE.decode():
                raise LocalProtocolError("in v1 this text means Bye; send Bye() instead")
            self._message_id = event.message_id or self._message_id + 1
            return encode_v1_frame(event.text.encode("utf-8", "replace")), []
        if isinstance(event, Bye):
            if self._bye_sent or state is not State.CHATTING:
                return b"", []  # during login (or after the end) v1 can only close
            self._bye_sent = True
            return encode_v1_frame(V1_GOODBYE), []
        if isinstance(event, (Error, Ping)):
            return b"", []  # v1 clients have no way to say either
        raise LocalProtocolError(f"{frame_name(event)} can't be expressed in protocol v1")

    def error_reply(self, exc: RemoteProtocolError, state: State) -> bytes:
        return b""  # the original server understands nothing but frames of text
