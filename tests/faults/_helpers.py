"""
Helpers of the fault-injection suite: several users, v1 and v2 clients side by
side, answers collected in threads, and the history check that no
acknowledged turn was lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatcore.protocol import AnswerDelta, AnswerEnd, Error, ErrorCode

from tests.fixtures.server import LiveServer
from tests.fixtures.v1client import TERMINATOR, OriginalV1Client
from tests.server.clients import logged_in

USERS = {f"user{i}": f"password-of-user{i}" for i in range(6)}


@dataclass
class Outcome:
    """What one client saw for one message, protocol-neutral."""

    user: str
    version: str
    text: str = ""  # the answer as received
    ended: bool = False  # END (v2) / terminator without an error (v1)
    error_code: str | None = None  # v2 ERROR code, or the code of a v1 "[ERROR] code: ..." line
    error_message: str = ""
    notices: list[Any] = field(default_factory=list)
    exception: str | None = None
    reason: str = ""  # v2 END reason ("stop", "cancelled", ...); v1 can't say

    @property
    def acknowledged(self) -> bool:
        """The client was told the answer is complete."""
        return self.ended and self.error_code is None and self.reason != "cancelled"


class Chatter:
    """One logged-in client of either version, with a start/finish split so a
    test can act (kill the model, SIGTERM the server) while answers stream."""

    def __init__(self, server: LiveServer, user: str, version: str) -> None:
        self.user, self.version = user, version
        password = USERS[user]
        if version == "v1":
            self.v1 = OriginalV1Client(server.port, timeout=60)
            assert self.v1.login(user, password) == (b" username accepted", b" password accepted")
        else:
            self.v2 = logged_in(server.port, user, password)
            self.v2.sock.settimeout(60)
        self.mid = 0
        self._pending = []

    def start(self, text: str, *, wait_first: bool = True) -> None:
        """Send ``text``; with ``wait_first``, return once the first answer
        byte (or the final reply) has arrived."""
        self._pending: list[Any] = []
        if self.version == "v1":
            self.v1.send_frame(text)
            if wait_first:
                self._pending.append(self.v1.read_chunk())
            return
        self.mid = self.v2.start_chat(text)
        while wait_first:
            event = self.v2.next_event()
            self._pending.append(event)
            if isinstance(event, AnswerDelta) or self._final(event):
                return

    def finish(self) -> Outcome:
        out = Outcome(self.user, self.version)
        try:
            if self.version == "v1":
                chunks = list(self._pending)
                while not chunks or (chunks[-1] != TERMINATOR and chunks[-1].strip() != b"<GoodBye>"
                                     and len(chunks[-1]) == 64):
                    chunks.append(self.v1.read_chunk())
                body = b"".join(c for c in chunks if c != TERMINATOR and c.strip() != b"<GoodBye>")
                text = body.decode("ascii").rstrip()
                if "[ERROR] " in text:
                    head, _, err = text.partition("[ERROR] ")
                    code, _, msg = err.partition(":")
                    out.error_code, out.error_message = code.strip(), msg.strip()
                    out.text = head.rstrip()
                else:
                    out.text = text
                out.ended = chunks[-1] == TERMINATOR
            else:
                reply_events = list(self._pending)
                if not any(self._final(e) for e in reply_events):
                    reply = self.v2.collect(self.mid)
                    reply_events += reply.events
                out.text = "".join(e.text for e in reply_events if isinstance(e, AnswerDelta))
                out.notices = [e for e in reply_events if type(e).__name__ == "Notice"]
                err = next((e for e in reply_events if isinstance(e, Error)), None)
                if err is not None:
                    out.error_code, out.error_message = err.code.value, err.message
                end = next((e for e in reply_events if isinstance(e, AnswerEnd)), None)
                out.reason = end.reason if end is not None else ""
                out.ended = end is not None or err is not None
        except Exception as exc:  # a hang guard or a closed socket: report, don't hide
            out.exception = f"{type(exc).__name__}: {exc}"
        return out

    def _final(self, event: Any) -> bool:
        return isinstance(event, (AnswerEnd, Error)) and getattr(event, "message_id", None) in (
            self.mid, None)

    def chat(self, text: str) -> Outcome:
        self.start(text, wait_first=False)
        return self.finish()

    def next_raw_event(self) -> Any:
        return self.v2.next_event() if self.version == "v2" else self.v1.read_chunk()

    def close(self) -> None:
        (self.v1 if self.version == "v1" else self.v2).close()


def in_threads(fns: list[Callable[[], Any]], timeout: float = 90) -> list[Any]:
    """Run callables concurrently; their results in order (exceptions re-raised)."""
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client hung"
    if errors:
        raise errors[0]
    return results


def assert_clear(outcome: Outcome, codes: set[ErrorCode]) -> None:
    """The user got one of ``codes`` with a human sentence (no internals)."""
    assert outcome.exception is None, outcome
    assert outcome.error_code in {c.value for c in codes}, outcome
    msg = outcome.error_message
    assert msg and len(msg) < 300, outcome
    for leak in ("Traceback", "Exception", "httpx", "127.0.0.1", "http://", "Errno"):
        assert leak not in msg, outcome
    assert outcome.ended, outcome  # v2: the error ended the message; v1: terminator follows


def history_by_user(server: LiveServer) -> dict[str, list[dict[str, Any]]]:
    return {user: server.history(user) for user in USERS}


def assert_acknowledged_turns_stored(server: LiveServer, outcomes: list[Outcome]) -> None:
    """Every answer a client saw completed is in the history, complete, with
    the text the client received (v1 receives an ASCII rendering: prefix check)."""
    history = history_by_user(server)
    for o in outcomes:
        if not o.acknowledged:
            continue
        stored = [t for t in history[o.user] if t["status"] == "complete"]
        if o.version == "v2":
            assert any(t["answer"] == o.text for t in stored), (o, stored)
        else:
            assert any(t["answer"].strip().startswith(o.text[:40]) for t in stored), (o, stored)
