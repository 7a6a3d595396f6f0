"""
chatcore.protocol
~~~~~~~~~~~~~~~~~

The sans-IO codec of the chat protocol, versions 1 (the original, byte-exact)
and 2 (typed JSON frames): bytes in, typed events out, and back. See
docs/PROTOCOL.md for the wire format and docs/ARCHITECTURE.md for the API.
"""

from ._connection import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_UNAUTH_FRAME_SIZE,
    NEED_DATA,
    Connection,
)
from ._errors import FATAL_CODES, ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    MAX_NAME_LENGTH,
    AnswerDelta,
    AnswerEnd,
    Authenticate,
    AuthResult,
    Bye,
    Cancel,
    ChatMessage,
    ClientHello,
    ConnectionClosed,
    EndReason,
    Error,
    Event,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    ServerHello,
    frame_name,
    name_problem,
    without_controls,
)
from ._header import HEADER_SIZE, encode_v1_frame
from ._state import Role, State
from ._v1 import (
    V1_CUSS_WARNING,
    V1_DISCONNECTED,
    V1_GOODBYE,
    V1_INVALID_PASSWORD,
    V1_INVALID_USERNAME,
    V1_PASSWORD_ACCEPTED,
    V1_TERMINATOR,
    V1_USERNAME_ACCEPTED,
    to_v1_text,
)

__all__ = (
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_UNAUTH_FRAME_SIZE",
    "FATAL_CODES",
    "HEADER_SIZE",
    "MAX_NAME_LENGTH",
    "NEED_DATA",
    "V1_CUSS_WARNING",
    "V1_DISCONNECTED",
    "V1_GOODBYE",
    "V1_INVALID_PASSWORD",
    "V1_INVALID_USERNAME",
    "V1_PASSWORD_ACCEPTED",
    "V1_TERMINATOR",
    "V1_USERNAME_ACCEPTED",
    "AnswerDelta",
    "AnswerEnd",
    "AuthResult",
    "Authenticate",
    "Bye",
    "Cancel",
    "ChatMessage",
    "ClientHello",
    "Connection",
    "ConnectionClosed",
    "EndReason",
    "Error",
    "ErrorCode",
    "Event",
    "LocalProtocolError",
    "Notice",
    "NoticeKind",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "ServerHello",
    "State",
    "encode_v1_frame",
    "frame_name",
    "name_problem",
    "to_v1_text",
    "without_controls",
)
