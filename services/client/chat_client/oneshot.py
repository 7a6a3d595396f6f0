"""
chat_client.oneshot
~~~~~~~~~~~~~~~~~~~

``chat-client --message TEXT``: authenticate, send one message, print the
answer to stdout as it arrives (plain text), exit 0. Any failure becomes a
:class:`~chat_client.errors.ClientError`: one line on stderr and the exit code
documented in ``--help``. Informational notices (queue position, context
trimmed…) go to stderr only with ``--verbose``, so a failing run prints exactly
one line there.
"""

from __future__ import annotations

import sys
from typing import IO

from chatcore.privacy import refusal_notice
from chatcore.protocol import Notice

from .connection import ChatConnection
from .errors import PrivacyRefused
from .render import PlainStream, notice_text
from .turn import run_turn

__all__ = ["check_privacy", "run_oneshot"]


def check_privacy(text: str) -> None:
    """Refuse, like the original client, before anything reaches the server."""
    notice = refusal_notice(text)
    if notice is not None:
        raise PrivacyRefused(notice)


def run_oneshot(conn: ChatConnection, text: str, *, conversation: str, timeout: float,
                model: str = "",
                out: IO[str] | None = None, err: IO[str] | None = None,
                verbose: bool = False) -> None:
    """Send ``text`` on an authenticated connection and stream the answer to ``out``."""
    out = out or sys.stdout
    err = err or sys.stderr
    stream = PlainStream(out)

    def on_notice(notice: Notice) -> None:
        if verbose:
            err.write(f"[{notice.kind.value}] {notice_text(notice)}\n")
            err.flush()

    try:
        outcome = run_turn(conn, text, conversation=conversation, model=model,
                           timeout=timeout, on_delta=stream.append, on_notice=on_notice)
    finally:
        stream.finish()
    if outcome.failure is not None:
        conn.close(bye=False)
    outcome.raise_for_status()
