"""
SIGTERM while several answers stream, over v1 and v2 at once
(tests/server/test_durability.py covers one v2 answer).

With enough grace every answer finishes, is stored, and each client is then
told the server is restarting; with too little, every unfinished answer is
stored as ``interrupted``. Either way the process exits 0.
"""

from __future__ import annotations

import signal
import threading

import pytest
from chatcore.protocol import Error, ErrorCode

from tests.fixtures.v1client import TERMINATOR

from ._helpers import USERS, Chatter, assert_acknowledged_turns_stored, history_by_user

pytestmark = pytest.mark.faults


def _stop_in_background(server) -> tuple[threading.Thread, list[int | None]]:
    code: list[int | None] = []
    t = threading.Thread(target=lambda: code.append(server.stop(signal.SIGTERM, timeout=60)))
    t.start()
    return t, code


def test_sigterm_during_several_answers_finishes_and_stores_them_all(server_factory) -> None:
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8", CHAT_SHUTDOWN_GRACE="20")
    chatters = [Chatter(server, u, "v1" if i % 2 == 0 else "v2") for i, u in enumerate(list(USERS)[:4])]
    for c in chatters:
        c.start(f"finish me {c.user} [standin:tokens=60] [standin:delay-ms=30]")
    stopper, code = _stop_in_background(server)
    outcomes = [c.finish() for c in chatters]
    for o in outcomes:
        assert o.acknowledged, o
        assert o.text.startswith("Echo: finish me"), o
    # After its answer, each client hears that the server is going away.
    for c in chatters:
        if c.version == "v2":
            last = c.next_raw_event()
            assert isinstance(last, Error) and last.code is ErrorCode.SHUTTING_DOWN, last
        else:
            rest = b""
            while (chunk := c.v1.read_chunk()) and len(chunk) == 64:
                rest += chunk
                if chunk.strip() == b"<GoodBye>":
                    break
            assert b"[ERROR] shutting_down" in rest and rest.endswith(b"<GoodBye>".ljust(64)), rest
            assert TERMINATOR not in rest
        c.close()
    stopper.join(60)
    assert code == [0]
    assert_acknowledged_turns_stored(server, outcomes)
    history = history_by_user(server)
    for c in chatters:
        [turn] = history[c.user]
        assert turn["status"] == "complete" and turn["answer_tokens"] == 60, turn
    assert "Traceback" not in server.log_text()


def test_sigterm_with_a_short_grace_stores_every_unfinished_answer(server_factory) -> None:
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8", CHAT_SHUTDOWN_GRACE="1")
    chatters = [Chatter(server, u, "v1" if i % 2 == 0 else "v2") for i, u in enumerate(list(USERS)[:4])]
    for c in chatters:
        c.start(f"too long {c.user} [standin:tokens=400] [standin:delay-ms=40]")
    assert server.stop(signal.SIGTERM, timeout=60) == 0
    outcomes = [c.finish() for c in chatters]
    for c, o in zip(chatters, outcomes, strict=True):
        if c.version == "v2":  # told it was cut short (v1 has no way to say it)
            assert o.exception is None and not o.acknowledged, o
        c.close()
    history = history_by_user(server)
    for c in chatters:
        [turn] = history[c.user]
        assert turn["status"] == "interrupted", turn
        assert turn["answer"].startswith(f"Echo: too long {c.user}"), turn
    assert "Traceback" not in server.log_text()
