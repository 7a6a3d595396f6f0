"""
chatcore.protocol._header
~~~~~~~~~~~~~~~~~~~~~~~~~

Strict parsing of the 64-byte frame headers of v1 and v2, and frame encoding.

``int()`` is far more permissive than "ASCII decimal": it accepts ``b"+12"``,
``b"-12"``, ``b"1_2"``, surrounding whitespace and, once decoded to ``str``,
Arabic-Indic or fullwidth digits (docs/SECURITY.md §1.2). So headers are matched
with a full-match regular expression on the raw bytes and only then converted.

Both parsers also look at an *incomplete* header: bytes that can no longer
become a valid header, or digits that already exceed the frame limit, are
refused at once rather than after the 64th byte (the number can only grow as
digits arrive). Either way no body byte is ever accepted for a frame whose
announced length is over the limit.
"""

from __future__ import annotations

import re

from ._errors import ErrorCode, RemoteProtocolError

# Everything in __all__ gets re-exported as part of the chatcore.protocol public API.
__all__ = ["HEADER_SIZE", "encode_v1_frame"]

#: Every frame header of both versions is exactly this many ASCII bytes.
HEADER_SIZE = 64

# v1: 1..20 ASCII digits, then spaces up to 64 bytes. Leading zeros are legal
# (the original client never sends them, but they are harmless: the value is
# what is bounded). A length of 0 is legal (an empty username or message).
_V1_HEADER = re.compile(rb"([0-9]{1,20}) *")
_V1_PARTIAL = re.compile(rb"[0-9]{0,20}|[0-9]{1,20} *")
_V1_LENGTH = re.compile(rb"[0-9]{1,20}")

# v2: TYPE SP LENGTH, spaces up to 64 bytes. TYPE starts with a letter so that
# its first byte tells a server "v2" (a v1 header starts with a digit).
_V2_HEADER = re.compile(rb"([A-Z][A-Z_]{0,15}) ([0-9]{1,10}) *")
_V2_PARTIAL = re.compile(rb"(?:[A-Z][A-Z_]{0,15}(?: (?:[0-9]{1,10} *)?)?)?")
_V2_LENGTH = re.compile(rb"[A-Z][A-Z_]{0,15} ([0-9]{1,10})")

# The order of the checks makes the outcome independent of how the header was
# split into reads: first the limit on the digits seen so far (they can only
# grow), then the syntax. A header is refused with FRAME_TOO_LARGE as soon as
# its valid prefix announces too much, whatever garbage follows.


def _bad_header() -> RemoteProtocolError:
    # Never echo the peer's bytes back (docs/SECURITY.md §1.3).
    return RemoteProtocolError("invalid frame header", ErrorCode.PROTOCOL_ERROR)


def _check_limit(digits: bytes, limit: int, *, more: bool = False) -> int:
    """``more``: a digit follows, or may still arrive, so the frame announces
    at least ``digits`` (the refusal must not state a size it does not know)."""
    length = int(digits)
    if length > limit:
        size = f"at least {length}" if more else str(length)
        raise RemoteProtocolError(
            f"frame body of {size} bytes exceeds the limit of {limit} bytes",
            ErrorCode.FRAME_TOO_LARGE,
        )
    return length


def _more_digits(head: bytes, end: int) -> bool:
    """The digits that end at ``end`` may go on: the header is cut there, or a digit follows."""
    return end == len(head) or 0x30 <= head[end] <= 0x39


def parse_v1_header(buf: bytes | bytearray, limit: int) -> int | None:
    """The body length announced by the v1 header at the start of ``buf``.

    Returns None while fewer than 64 bytes are buffered and they can still
    become a valid header. Raises RemoteProtocolError (PROTOCOL_ERROR or
    FRAME_TOO_LARGE) as soon as they cannot.
    """
    head = bytes(buf[:HEADER_SIZE])
    m = _V1_LENGTH.match(head)
    if m is not None:
        _check_limit(m.group(), limit, more=_more_digits(head, m.end()))
    if len(head) < HEADER_SIZE:
        if _V1_PARTIAL.fullmatch(head) is None:
            raise _bad_header()
        return None
    m = _V1_HEADER.fullmatch(head)
    if m is None:
        raise _bad_header()
    return _check_limit(m.group(1), limit)


def parse_v2_header(buf: bytes | bytearray, limit: int) -> tuple[str, int] | None:
    """``(TYPE, length)`` of the v2 header at the start of ``buf``; None while
    incomplete but still valid. Raises like :func:`parse_v1_header`."""
    head = bytes(buf[:HEADER_SIZE])
    m = _V2_LENGTH.match(head)
    if m is not None:
        _check_limit(m.group(1), limit, more=_more_digits(head, m.end()))
    if len(head) < HEADER_SIZE:
        if _V2_PARTIAL.fullmatch(head) is None:
            raise _bad_header()
        return None
    m = _V2_HEADER.fullmatch(head)
    if m is None:
        raise _bad_header()
    return m.group(1).decode("ascii"), _check_limit(m.group(2), limit)


def encode_v1_frame(body: bytes) -> bytes:
    """A v1 frame: the decimal length right-padded with spaces to 64 bytes, then
    the body. This is exactly what the original client sends."""
    return str(len(body)).encode("ascii").ljust(HEADER_SIZE, b" ") + body


def encode_v2_frame(frame_type: str, body: bytes) -> bytes:
    """A v2 frame: ``TYPE SP LENGTH`` right-padded to 64 bytes, then the body."""
    return f"{frame_type} {len(body)}".encode("ascii").ljust(HEADER_SIZE, b" ") + body
