"""
Faults of the model service, injected through the Ollama API stand-in, with
several v1 and v2 clients at once (tests/server/test_model.py covers the
single-client v2 cases; this goes further).

For every fault: each affected user gets a clear, coded message (v2 ERROR,
v1 ``[ERROR] code: message`` then the terminator), the others are unaffected,
the server keeps serving, no traceback is logged, and every answer a client
saw complete is in the history (``chat-server history export``).
"""

from __future__ import annotations

import pytest
from chatcore.protocol import ErrorCode

from tests.server.clients import wait_until

from ._helpers import (
    USERS,
    Chatter,
    Outcome,
    assert_acknowledged_turns_stored,
    assert_clear,
    history_by_user,
    in_threads,
)

pytestmark = pytest.mark.faults

LOADING_OR_DOWN = {ErrorCode.MODEL_UNAVAILABLE, ErrorCode.MODEL_LOADING}


def _mixed(server, n: int = 4) -> list[Chatter]:
    """n clients, alternating v1 and v2, each its own user."""
    users = list(USERS)
    return [Chatter(server, users[i], "v1" if i % 2 == 0 else "v2") for i in range(n)]


def said(o: Outcome, prefix: str) -> bool:
    """The answer starts with ``prefix`` (whitespace-insensitive: the stand-in's
    echo keeps the spaces its removed directives leave behind)."""
    return " ".join(o.text.split()).startswith(prefix)


def _no_traceback(server) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]


def _chat_all(chatters: list[Chatter], text: str) -> list[Outcome]:
    return in_threads([lambda c=c: c.chat(f"{text} from {c.user}") for c in chatters])


def _until_served(chatter: Chatter, timeout: float = 30) -> Outcome:
    """Retry until a message is answered (the model may take a moment to be
    ready again); every refusal on the way must be a clear one."""
    seen: list[Outcome] = []

    def attempt() -> Outcome | None:
        o = chatter.chat("are you back?")
        if o.acknowledged:
            return o
        assert_clear(o, LOADING_OR_DOWN)
        seen.append(o)
        return None

    return wait_until(attempt, timeout=timeout, interval=0.5)


def test_model_api_down_at_start_then_up(server_factory, standin) -> None:
    standin.stop()  # the port stays known: start() brings it back on the same one
    server = server_factory(users=USERS, wait_ready=False)
    chatters = _mixed(server, 4)
    try:
        refused = _chat_all(chatters, "anyone there?")
        for o in refused:
            assert_clear(o, LOADING_OR_DOWN)
        assert "not reachable" in server.log_text()
        standin.start()
        server.wait_for_log("model ready", timeout=30)
        answered = _chat_all(chatters, "now?")
        for o in answered:
            assert o.acknowledged, o
            assert said(o, "Echo: now? from"), o
        assert_acknowledged_turns_stored(server, answered)
        # Refused messages are in the history only as failed attempts, never as answers.
        for user, turns in history_by_user(server).items():
            for t in turns:
                if "anyone there?" in t["user"]:
                    assert t["status"] == "error" and t["answer"] == "", (user, t)
    finally:
        for c in chatters:
            c.close()
    _no_traceback(server)


def test_model_api_killed_mid_stream_then_refusing_then_back(server_factory, standin) -> None:
    # The stand-in dies while four answers stream: connections reset mid-answer,
    # then every new connection to it is refused, then it comes back.
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8")
    chatters = _mixed(server, 4)
    try:
        for c in chatters:
            c.start(f"long answer for {c.user} [standin:tokens=400] [standin:delay-ms=20]")
        standin.stop()
        cut = [c.finish() for c in chatters]
        for o in cut:
            assert_clear(o, {ErrorCode.MODEL_ERROR})
            assert said(o, "Echo:"), o  # what was said so far stays
        refused = _chat_all(chatters, "model down?")
        for o in refused:
            assert_clear(o, LOADING_OR_DOWN)
        standin.start()
        back = [_until_served(c) for c in chatters]
        assert all(said(o, "Echo: are you back?") for o in back), back
        # The cut answers are stored with what was generated, status "error".
        history = history_by_user(server)
        for c in chatters:
            [turn] = [t for t in history[c.user] if t["user"].startswith("long answer")]
            assert turn["status"] == "error", turn
            assert turn["answer"].startswith("Echo:"), turn
        assert_acknowledged_turns_stored(server, back)
    finally:
        for c in chatters:
            c.close()
    _no_traceback(server)


@pytest.mark.parametrize("fault", ["error-mid-stream", "cut-mid-stream", "reset-mid-stream"])
def test_mid_stream_fault_hits_some_of_many_concurrent_answers(server_factory, standin,
                                                               fault: str) -> None:
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8")
    chatters = _mixed(server, 6)
    try:
        standin.control(fault=fault, fault_count=3)
        first = _chat_all(chatters, "hello [standin:tokens=30] [standin:delay-ms=10]")
        failed = [o for o in first if not o.acknowledged]
        ok = [o for o in first if o.acknowledged]
        assert len(failed) == 3 and len(ok) == 3, first
        for o in failed:
            assert_clear(o, {ErrorCode.MODEL_ERROR})
        for o in ok:
            assert said(o, "Echo: hello from"), o
        # The fault is spent: everyone, including the failed, is served again.
        again = _chat_all(chatters, "again")
        assert all(o.acknowledged for o in again), again
        assert_acknowledged_turns_stored(server, first + again)
        statuses = [t["status"] for turns in history_by_user(server).values() for t in turns]
        assert statuses.count("error") == 3 and statuses.count("complete") == 9, statuses
    finally:
        for c in chatters:
            c.close()
    _no_traceback(server)


@pytest.mark.parametrize(("fault", "message"), [
    ("status-503", "busy"),
    ("status-404", "not available"),
])
def test_model_api_status_errors_under_concurrency(server_factory, standin, fault: str,
                                                   message: str) -> None:
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8")
    chatters = _mixed(server, 4)
    try:
        standin.control(fault=fault, fault_count=2)
        first = _chat_all(chatters, "hello")
        refused = [o for o in first if not o.acknowledged]
        assert len(refused) == 2, first
        for o in refused:
            assert_clear(o, LOADING_OR_DOWN)
            assert message in o.error_message.lower(), o
        # The service is fine again: the refused users are served (404 may
        # make the server re-check the model first; that must not take long).
        back = [_until_served(c, timeout=20) for c in chatters]
        assert_acknowledged_turns_stored(server, first + back)
    finally:
        for c in chatters:
            c.close()
    _no_traceback(server)


def test_model_stall_is_cut_by_the_read_timeout_and_others_are_served_meanwhile(
        server_factory, standin) -> None:
    server = server_factory(users=USERS, CHAT_MODEL_READ_TIMEOUT="2", CHAT_MAX_PARALLEL="8")
    stalled = _mixed(server, 2)  # one v1, one v2
    bystanders = [Chatter(server, "user4", "v2"), Chatter(server, "user5", "v1")]
    try:
        for c in stalled:
            c.start(f"stall for {c.user} [standin:stall=30]")
        # While both stall, other users are answered normally.
        for o in _chat_all(bystanders, "not stalled"):
            assert o.acknowledged and said(o, "Echo: not stalled"), o
        outcomes = [c.finish() for c in stalled]
        for o in outcomes:
            assert_clear(o, {ErrorCode.MODEL_ERROR})
            assert "too long" in o.error_message, o
        # The upstream requests were abandoned, not left running for 30 s.
        stalls = [r for r in standin.requests() if r.get("fault") == "stall"]
        assert len(stalls) == 2
        wait_until(lambda: all(r["finished"] for r in standin.requests()
                               if r.get("fault") == "stall"), timeout=10)
        for o in _chat_all(stalled, "after the stall"):
            assert o.acknowledged, o
        history = history_by_user(server)
        for c in stalled:
            [turn] = [t for t in history[c.user] if t["user"].startswith("stall for")]
            assert turn["status"] == "error" and turn["answer"].startswith("Echo:"), turn
    finally:
        for c in stalled + bystanders:
            c.close()
    _no_traceback(server)
