"""An answer cannot drive the reader's terminal, on either protocol.

A model can be told (by a document it reads, or by the user) to write escape
sequences: clear the screen, set the window title, write the clipboard (OSC
52), or a carriage return that lets later text cover earlier text. The server
drops control characters other than newline and tab from the answer before
it is masked and sent, so what is moderated is what is shown, for our client
and for any other (docs/PROTOCOL.md §4, "Text that is shown").
"""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import OriginalV1Client, answer_text

from .clients import logged_in

HOSTILE = "Hello\x1b[2J\x1b[H there\r, friend\x1b]0;pwned\x07 and\x1b]52;c;eA==\x1b\\ bye\x9b2J."
SHOWN = "Hello[2J[H there, friend]0;pwned and]52;c;eA==\\ bye2J."


def say(text: str) -> str:
    return f"[standin:say-b64={base64.b64encode(text.encode()).decode()}]"


@pytest.fixture
def moderated(server_factory, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("abcxyz\n")
    return server_factory(CHAT_CUSS_WORDS_FILE=str(words))


def test_v2_answer_text_arrives_without_controls_and_is_stored_so(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat(say(HOSTILE))
    client.close()
    assert reply.error is None, reply.events
    assert reply.text == SHOWN
    assert live_server.history(USER)[-1]["answer"] == SHOWN


def test_v1_answer_text_arrives_without_controls(live_server):
    with OriginalV1Client(live_server.port) as v1:
        v1.login(USER, PASSWORD)
        assert answer_text(v1.chat(say(HOSTILE))) == SHOWN


@pytest.mark.parametrize("hidden", ["abc\x1bxyz", "abc\rxyz", "a\x00b\x08c\x7fx\x9by\x85z"])
def test_a_banned_word_split_by_controls_is_masked_as_it_is_shown(moderated, hidden):
    client = logged_in(moderated.port, USER, PASSWORD)
    reply = client.chat(say(f"well {hidden} to you"))
    client.close()
    assert reply.text == "well ****** to you"
