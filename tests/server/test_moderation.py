"""Moderation on the server, for every client."""

from __future__ import annotations

import base64
import os
import time

import pytest
from chatcore.protocol import ErrorCode, NoticeKind

from tests.fixtures.server import PASSWORD, USER

from .clients import logged_in


@pytest.fixture
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# test list\nabcxyz\nass\n")
    return path


@pytest.fixture
def moderated(server_factory, words_file):
    return server_factory(CHAT_CUSS_WORDS_FILE=str(words_file))


def say(text: str) -> str:
    return f"[standin:say-b64={base64.b64encode(text.encode()).decode()}]"


@pytest.mark.parametrize("text", ["ABCXYZ", "you abcxyz!", "a.b.c.x.y.z", "ＡＢＣＸＹＺ", "abc\u200bxyz"])
def test_banned_word_variants_are_refused_over_v2(moderated, text):
    client = logged_in(moderated.port, USER, PASSWORD)
    reply = client.chat(text)
    assert reply.error is not None and reply.error.code is ErrorCode.REFUSED
    assert [n.kind for n in reply.notices] == [NoticeKind.MODERATION]
    assert reply.deltas == []
    # v2 keeps the session open after a refusal.
    assert client.chat("hello").text.startswith("Echo: hello")
    client.close()
    assert len(moderated.standin.requests()) == 1
    assert [t["user"] for t in moderated.history(USER)] == ["hello"]


def test_innocent_words_containing_a_banned_one_pass(moderated):
    client = logged_in(moderated.port, USER, PASSWORD)
    reply = client.chat("a classic assessment of bass guitar")
    assert reply.error is None
    assert reply.text.startswith("Echo: a classic assessment of bass guitar")
    client.close()


def test_banned_word_list_reloads_without_restart(moderated, words_file):
    client = logged_in(moderated.port, USER, PASSWORD)
    assert client.chat("zorblax").error is None
    time.sleep(0.01)
    words_file.write_text("abcxyz\nzorblax\n")
    os.utime(words_file, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))

    def refused() -> bool:
        r = client.chat("zorblax")
        return r.error is not None and r.error.code is ErrorCode.REFUSED

    deadline = time.monotonic() + 10
    while not refused():
        assert time.monotonic() < deadline, "the new word list was never applied"
        time.sleep(0.3)
    client.close()


@pytest.mark.parametrize(
    ("text", "notice"),
    [
        ("mail me at raj.kumar@example.co.in", "email address"),
        ("RAJ@GMAIL.COM please", "email address"),
        ("my number is +91-9876543210", "phone number"),
        ("call +91 98765 43210 now", "phone number"),
        ("ring 09876543210", "phone number"),
        ("ring 9876543210", "phone number"),
        ("London office +44 20 7946 0958", "phone number"),
    ],
)
def test_personal_data_is_refused_never_sent_never_stored(live_server, text, notice):
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat(text)
    assert reply.error is not None and reply.error.code is ErrorCode.REFUSED
    assert reply.error.message == f"you are not allowed to share {notice} with the chat help"
    assert [n.kind for n in reply.notices] == [NoticeKind.PRIVACY]
    client.close()
    assert live_server.standin.requests() == []
    assert live_server.history(USER) == []


def test_personal_data_in_the_answer_is_masked_across_tokens(live_server):
    secret = "Sure: write to priya.sharma@example.com or call +91 98765 43210 today."
    client = logged_in(live_server.port, USER, PASSWORD)
    # A small delay per token so the pieces reach the server one by one.
    reply = client.chat(say(secret) + " [standin:delay-ms=5]")
    assert reply.error is None
    assert len(reply.deltas) > 3  # it streamed in pieces
    assert "priya.sharma@example.com" not in reply.text
    assert "98765" not in reply.text
    assert "[email removed]" in reply.text and "[phone removed]" in reply.text
    assert reply.text.startswith("Sure: write to ")
    assert any(n.kind is NoticeKind.ANSWER_MASKED for n in reply.notices)
    client.close()


def test_banned_words_in_the_answer_are_masked(moderated):
    client = logged_in(moderated.port, USER, PASSWORD)
    reply = client.chat(say("well, abcxyz to you"))
    assert "abcxyz" not in reply.text.lower()
    assert reply.text.startswith("well, ")
    client.close()
