"""
One user's use of the shared server as a conversation grows
(docs/SECURITY.md §12): what is sent to the model stays within the context
budget however long the conversation gets, with the newest turns in it and
the user told that older ones were left out; and the history the server
keeps is all of it (nothing acknowledged is lost).
"""

from __future__ import annotations

import secrets

from chatcore.protocol import NoticeKind

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import logged_in

from ._support import Guard

#: CHAT_CONTEXT_TOKENS of the shared server (the default).
CONTEXT_TOKENS = 3000


def test_what_the_model_is_sent_stays_within_the_budget_as_a_conversation_grows(
        guard: Guard) -> None:
    standin = guard.server.standin
    conversation = f"ever-growing-{secrets.token_hex(4)}"
    marker = secrets.token_hex(4)
    client = logged_in(guard.server.port, USER, PASSWORD)
    try:
        for n in range(12):  # 12 x 6 KiB of question: six budgets
            reply = client.chat(f"{marker} turn {n} " + "lorem ipsum " * 512, conversation)
            assert reply.end is not None, reply.events
        trimmed = [e for e in reply.notices if e.kind is NoticeKind.CONTEXT_TRIMMED]
        assert trimmed, reply.events
    finally:
        client.close()
    sent = [r for r in standin.requests()
            if marker in str(r["body"].get("messages", [{}])[-1].get("content", ""))]
    assert len(sent) == 12
    for request in sent[-4:]:
        messages = request["body"]["messages"]
        chars = sum(len(m["content"]) for m in messages[:-1])
        # The earlier turns fit the budget (estimated at 4 characters a token).
        assert chars <= CONTEXT_TOKENS * 4, chars
        # The newest turns are the ones kept, in order, ending with the question.
        turns = [m["content"].split(" ")[2] for m in messages if m["role"] == "user"]
        assert turns == sorted(turns, key=int) and len(turns) >= 1
    last = sent[-1]["body"]["messages"]
    assert last[-1]["content"].startswith(f"{marker} turn 11 ")
    # Everything is in the history, nonetheless.
    kept = [t for t in guard.server.history(USER) if t["conversation"] == conversation]
    assert len(kept) == 12
    guard.check()
