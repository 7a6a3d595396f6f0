"""Multi-character leet and leet letters of other scripts (docs/SECURITY.md
§4), generated per class rather than hand-picked: every sequence of the
public leet alphabets (``|<`` k, ``ph`` f, ``|-|`` h, ``vv`` w, ``()`` o,
``|_|`` u, ``/\\`` a, ``\\/`` v, ``|\\|`` n, ``|\\/|`` m, ``><`` x…) in every
position of every listed word, and every Cyrillic or Greek leet letter
(``к я ш и п ф``…) inside an otherwise Latin word, is caught; real Russian,
Ukrainian and Greek words, and text that uses these characters for what they
are (code, emoticons, ASCII tables), are not; the streamed answer still
equals the whole-text mask."""

from __future__ import annotations

from pathlib import Path

import pytest
from chat_server.moderation import AnswerFilter, BannedWords, mask_answer
from chat_server.moderation.normalize import MULTI_LEET, SCRIPT_LEET, fold, leet_readings
from hypothesis import given, settings
from hypothesis import strategies as st

SHIPPED = BannedWords.from_file(Path(__file__).resolve().parents[2] / "cuss_words.txt")
WORDS = ["fuck", "shit", "cunt", "bitch", "whore", "twat", "wank", "slut", "bastard", "dickhead", "asshole"]


def _by_letter(table: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for seq, letter in table.items():
        out.setdefault(letter, []).append(seq)
    return out


MULTI_BY_LETTER = _by_letter(MULTI_LEET)
SCRIPT_BY_LETTER = _by_letter(SCRIPT_LEET)


@pytest.mark.parametrize("word", WORDS)
def test_every_multi_character_leet_sequence_in_every_position_attack_is_caught(word):
    missed = []
    for i, letter in enumerate(word):
        for seq in MULTI_BY_LETTER.get(letter, ()):
            attack = f"{word[:i]}{seq}{word[i + 1:]}"
            for text in (attack, f"you {attack} now", attack.upper()):
                if not SHIPPED.contains(text):
                    missed.append(text)
    assert not missed, missed


@pytest.mark.parametrize("word", WORDS)
def test_every_cyrillic_and_greek_leet_letter_inside_a_latin_word_attack_is_caught(word):
    missed = []
    for i, letter in enumerate(word):
        for ch in SCRIPT_BY_LETTER.get(letter, ()):
            text = f"you {word[:i]}{ch}{word[i + 1:]} now"
            if not SHIPPED.contains(text):
                missed.append(text)
    assert not missed, missed


@pytest.mark.parametrize("text", ["f\u0438ck", "c\u0438nt", "F\u0418CK"])
def test_cyrillic_i_read_as_u_attack_is_caught(text):
    assert SHIPPED.contains(text)


@pytest.mark.parametrize("text", [
    "\u043c\u0430\u0439\u043a",  # майк, the name that "к" as k made banned before
    "\u0448\u0430\u043d\u043a",  # шанк: Cyrillic throughout is Russian, not leet
    "\u0444\u0430\u043a\u0442",  # факт
    "\u043f\u0438\u0441\u044c\u043c\u043e",
    "\u03c6\u03c9\u03c4\u03b9\u03ac",  # φωτιά
    "\u03b2\u03b9\u03b2\u03bb\u03af\u03bf",
    "\u042f\u043d\u0434\u0435\u043a\u0441",
])
def test_a_word_wholly_in_cyrillic_or_greek_is_not_read_as_leet(text):
    assert not SHIPPED.contains(text)
    assert not SHIPPED.contains(f"I wrote {text} in the letter")


@pytest.mark.parametrize("text", [
    "graph phone photo philosophy", "print() and f() == g()", "if (a) { x = [] } else { y = <> }",
    "| a | b |\n|---|---|\n| 1 | 2 |", "a |-| b", "C:\\Users\\vv\\", "savvy navvy", "I/O /\\ \\/ ><",
    ":-) (-: ;-) :-( )-:", "x |= y; z |< w", "see [1] [2] [3]", "\u042fndex",
    "uphill shepherd haphazard cuphead", "ophthalmology", "asphalt", "Stephen", "Phuket",
])
def test_innocent_text_with_leet_characters_is_not_refused(text):
    assert not SHIPPED.contains(text), SHIPPED.find(text)


def test_the_leet_reading_of_a_growing_text_begins_the_reading_of_the_whole():
    # Whatever comes next, the streaming copy is the beginning of the final one.
    text = "you s|-|it |\\/|e ()k \u0448ank ph"
    whole = {r.text for r, _ in leet_readings(text, fold(text))}
    for cut in range(1, len(text)):
        head = text[:cut]
        for reading, end in leet_readings(head, fold(head), final=False):
            assert end <= cut
            assert any(w.startswith(reading.text) for w in whole), (head, reading.text)


PIECES = [
    "|", "<", "-", "(", ")", "[", "]", "/", "\\", "_", "v", "vv", "p", "h", "ph", "|<", "|-|", "()", "|_|",
    "/\\", "\\/", "|\\|", "|\\/|", "><", "fu", "ck", "sh", "it", "wh", "re", "c", "nt", "wa", "nk", "b",
    "\u0448", "\u043a", "\u0438", "\u044f", "\u043c\u0430\u0439\u043a", "a", "o", "u", "s", "t",
    "fuck", "phuck", "vvank", "s|-|it", "wh()re", "c|_|nt", "\u0448ank", "fu\u0441\u043a", "hello", "graph",
]
SEPARATORS = ["", "", " ", "  ", "\n", ", ", ".", "-", "!"]
leet_texts = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=25).map(
    lambda items: "".join(w + s for w, s in items))


def _stream(parts: list[str]) -> str:
    filt = AnswerFilter(SHIPPED, privacy=False)
    return "".join(filt.feed(p) for p in parts) + filt.finish()


@settings(max_examples=400, deadline=None)
@given(text=leet_texts, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20))
def test_streaming_equals_whole_text_mask_with_multi_character_and_script_leet(text, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    parts = [text[i:j] for i, j in zip([0, *points], [*points, len(text)], strict=True)]
    whole = mask_answer(text, SHIPPED, privacy=False)
    assert _stream(parts) == whole
    assert _stream(list(text)) == whole


@pytest.mark.timeout(120)
@pytest.mark.parametrize("text", [
    "|" * 65536, "|-" * 32768, "|\\/" * 21845, "vvv " * 16384, "ph" * 32768, "()" * 32768,
    "\u0448a" * 32768, "\u0448" * 65536, "s|-|i" * 13107,
])
def test_leet_readings_are_linear_on_adversarial_input(text):
    # Work is counted, not timed: the readings are built in one pass each, and
    # the streaming filter scans each character a bounded number of times.
    readings = leet_readings(text, fold(text))
    assert all(len(r.text) <= len(text) for r, _ in readings)
    filt = AnswerFilter(SHIPPED, privacy=False)
    out = [filt.feed(text[i : i + 256]) for i in range(0, len(text), 256)]
    out.append(filt.finish())
    assert "".join(out) == mask_answer(text, SHIPPED, privacy=False)
    assert filt.scanned <= 160 * len(text)
