"""
chatcore.protocol._buffer
~~~~~~~~~~~~~~~~~~~~~~~~~

The two small objects a :class:`~._connection.Connection` shares with its
codec, so that the codec never touches the connection itself (h11 hands its
readers a ``ReceiveBuffer`` in the same way):

* :class:`ReceiveBuffer`: the bytes received and not parsed yet, and whether
  the peer has closed. The connection feeds it; the codec consumes from it.
* :class:`FrameLimits`: the largest frame body the receiver accepts now (one
  limit before a successful login, a larger one after). The connection flips
  it on a successful :class:`~._events.AuthResult`; the codec reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__: list[str] = []


class ReceiveBuffer:
    """Received bytes not parsed yet, plus the peer's EOF."""

    __slots__ = ("_data", "eof")

    def __init__(self) -> None:
        # bytearray + del buf[:n]: consuming from the front is amortised O(n)
        # in CPython, so a long stream of small frames stays linear.
        self._data = bytearray()
        #: True once the peer closed its side (``receive_data(b"")``).
        self.eof = False

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if fewer are buffered), not consumed."""
        return bytes(self._data[:n])

    def first(self) -> int:
        """The first byte; the buffer must not be empty."""
        return self._data[0]

    def startswith(self, prefix: bytes) -> bool:
        return self._data.startswith(prefix)

    def is_prefix_of(self, data: bytes) -> bool:
        """True if everything buffered could still grow into ``data``."""
        return data.startswith(self._data)

    def take(self, n: int) -> bytes:
        """Remove and return the first ``n`` bytes."""
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def skip(self, n: int) -> None:
        """Drop the first ``n`` bytes."""
        del self._data[:n]


@dataclass(slots=True)
class FrameLimits:
    """The receiver's frame-body limits (docs/PROTOCOL.md §10)."""

    #: After a successful login.
    authenticated: int
    #: Until then.
    unauthenticated: int
    logged_in: bool = False

    @property
    def current(self) -> int:
        return self.authenticated if self.logged_in else self.unauthenticated
