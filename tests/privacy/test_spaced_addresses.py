"""E-mail addresses spelt out letter by letter (docs/SECURITY.md §3), generated
per class: letters one, two or three spaces (or tabs) apart, and a spaced-out
start that runs into an unspaced word at the "@" (``j o hn@…``), are one
address, masked whole, also while an answer streams (the spaced letters are
held until the address shows); prose with single letters is not an address."""

from __future__ import annotations

import pytest
from chat_server.moderation import AnswerFilter, BannedWords, mask_answer
from chatcore.privacy import EMAIL_MASK, detector_for, find_personal_data, mask_personal_data

BANNED = BannedWords(["abcxyz"])
LOCALS = ["john", "raj.kumar", "o.brien", "a1b2"]


def spaced(word: str, gap: str) -> str:
    return gap.join(word)


@pytest.mark.parametrize("gap", [" ", "  ", "   ", "\t", " \t"])
@pytest.mark.parametrize("local", LOCALS)
def test_a_local_part_spaced_out_any_width_attack_is_masked_whole(local, gap):
    for at, domain in (("@", "example.com"), (" @ ", "example.com"), ("@", spaced("example.com", gap))):
        text = f"mail {spaced(local, gap)}{at}{domain} now"
        assert mask_personal_data(text) == f"mail {EMAIL_MASK} now", text


@pytest.mark.parametrize("gap", [" ", "  ", "   "])
@pytest.mark.parametrize("split", [2, 3])
def test_a_spaced_start_that_runs_into_a_word_at_the_at_sign_attack_is_masked_whole(gap, split):
    local = "johnsmith"
    text = f"mail {spaced(local[:split], gap)}{gap[0]}{local[split:]}@example.com now"
    assert mask_personal_data(text) == f"mail {EMAIL_MASK} now", text


@pytest.mark.parametrize("text", [
    "mail j o h n@example.com ok", "mail j  o  h  n @ e x a m p l e . c o m ok", "mail j o hn@example.com ok",
    "mail j\to\th\tn@example.com ok", "mail j   o   hn at example dot com ok",
])
def test_a_spaced_address_streamed_character_by_character_leaks_no_letter(text):
    filt = AnswerFilter(BANNED)
    out = "".join(filt.feed(c) for c in text) + filt.finish()
    assert out == mask_answer(text, BANNED) == f"mail {EMAIL_MASK} ok"


@pytest.mark.parametrize("text", [
    "I saw a b cat", "rows a  b  c and x y z", "plan A or B", "a b c d e f g", "Q & A at 5",
    "the letters a b c, then d e f.", "x  y  z", "options: a) b) c)", "see p. 12 a b",
])
def test_prose_with_single_letters_is_not_an_address(text):
    assert find_personal_data(text) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("text", [("j  o  " * 11000)[:65536], ("j o hn " * 9400)[:65536],
                                  ("a   " * 16384), ("j o h n @ " * 6600)[:65536]])
def test_spaced_reading_is_linear_on_adversarial_input(text):
    detector_for().find(text)
    filt = AnswerFilter(BANNED)
    out = [filt.feed(text[i : i + 256]) for i in range(0, len(text), 256)]
    out.append(filt.finish())
    assert "".join(out) == mask_answer(text, BANNED)
    assert filt.scanned <= 160 * len(text)
