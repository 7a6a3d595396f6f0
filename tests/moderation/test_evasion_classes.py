"""
Evasion classes of the banned-word matcher, generated rather than hand-picked
(the outside check re-runs each class with cases we do not see).

* Every character Unicode's confusables data says looks like a letter of a
  banned word, in every position, is caught as written: also where NFKD would
  turn it into another letter (long ``ſ`` is an ``f`` to the eye, an ``s`` to
  NFKD) and where a common word would excuse the NFKC form (``ſuck``).
* Leetspeak symbols, and single letters with one symbol between them.
* The reverse: names and inflected forms that only *looked* like a stretched
  banned word through the ``l``/``i`` merge (*Shilts*, *Blitch*), common words
  with an English clitic (*assess's*), and text that uses the new leet symbols
  for what they are (``C++``, ``Q&A``, ``#1``, ``A+``).
* A message is also judged as the model reads it: tag characters hidden in it
  ("ASCII smuggling") are read as the ASCII they encode; and as it is
  displayed: a right-to-left override shows the letters after it reversed.
  An answer loses its directional overrides, so it reads the same both ways.
"""

from __future__ import annotations

import importlib.resources
import json
import unicodedata
from pathlib import Path

import pytest
from chat_server.moderation import BannedWords, mask_answer, to_v1_answer_text, to_v2_answer_text
from chat_server.moderation.normalize import displayed_reading, model_reading
from chat_server.moderation.worker import BANNED_WORD, check_message
from chatcore.privacy import EMAIL_NOTICE, PHONE_NOTICE, detector_for

SHIPPED = BannedWords.from_file(Path(__file__).resolve().parents[2] / "cuss_words.txt")
WORDS = ["fuck", "shit", "cunt", "bitch", "whore", "twat", "wank", "slut", "bastard"]


def _lookalikes() -> dict[str, list[str]]:
    """ASCII letter -> the single characters the confusables data maps to it."""
    data = json.loads(
        importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    out: dict[str, set[str]] = {}
    for ch, glyphs in data.items():
        if len(ch) != 1 or ch.isascii():
            continue
        for g in glyphs:
            c = g["c"]
            if len(c) == 1 and c.isascii() and c.isalpha():
                out.setdefault(c.lower(), set()).add(ch)
    return {k: sorted(v) for k, v in out.items()}


LOOKALIKES = _lookalikes()


@pytest.mark.parametrize("word", WORDS)
def test_every_confusable_of_every_letter_attack_is_caught(word):
    missed = []
    for i, letter in enumerate(word):
        for ch in LOOKALIKES.get(letter, ()):
            text = f"you {word[:i]}{ch}{word[i + 1:]} now"
            if not SHIPPED.contains(text):
                missed.append(f"{word}[{i}]=U+{ord(ch):04X} {unicodedata.name(ch, '?')}")
    assert not missed, missed


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("long_s_is_an_f_not_an_s", "\u017fuck"),  # NFKD: s; to the eye: f; "suck" is a common word
        ("greek_lunate_sigma", "fu\u03f2k"),
        ("ogonek_for_i", "sh\u02dbt"),
        ("ypogegrammeni_for_i", "sh\u037at"),
        ("halfwidth_bar_for_l", "s\uffe8ut"),
        ("extended_arabic_indic_five_for_o", "wh\u06f5re"),
        ("telugu_anusvara_for_o", "wh\u0c02re"),
    ],
)
def test_lookalike_that_decomposes_to_another_letter_attack_is_caught(name, text):
    assert SHIPPED.contains(text), name
    assert SHIPPED.mask(f"you {text} now") == f"you {'*' * len(text)} now"


@pytest.mark.parametrize(
    "text",
    ["fu(k", "fu<k", "s#it", "shi+", "8itch", "whor\u20ac", "fvck", "FVCK", "fvcking", "mother#ucker".replace("#", "f")],
)
def test_leet_symbol_attack_is_caught(text):
    assert SHIPPED.contains(f"you {text}!"), text


@pytest.mark.parametrize("sep", [*"|!+$@#(<", "\u20ac"])
@pytest.mark.parametrize("word", ["fuck", "SHIT", "Bitch"])
def test_single_letters_with_one_symbol_between_attack_is_caught(word, sep):
    text = sep.join(word)
    assert SHIPPED.contains(f"oh {text} no"), text


@pytest.mark.parametrize(
    "text",
    [
        "Randy Shilts wrote it", "SHILTS", "Mr Blitch", "BLITCH", "the blitches",
        "assess's", "Assess's weight", "as's", "asse's",
        "C++ and C# and F#", "a Q&A session", "#1 hit", "an A+ grade", "i <3 u", "(a) and (b)",
        "x+y=z", "call me at 5+", "Hello! Wow! What?", "vivid vulva vivacious", "v1 v2 vv",
        "**bold** and __under__", "R&B", "AT&T", "<div>", "(see above)",
    ],
)
def test_innocent_text_is_not_refused(text):
    assert not SHIPPED.contains(text), SHIPPED.find(text)


def test_a_capital_i_next_to_an_l_still_stretches():
    # "I" looks like "l": the merge stays for letters of different case.
    assert SHIPPED.contains("bulIshit")
    assert SHIPPED.contains("bu1lshit")
    assert SHIPPED.contains("shiiit")


def test_a_banned_word_with_a_clitic_is_still_caught():
    assert SHIPPED.contains("shit's")
    assert SHIPPED.contains("fuck'll")
    assert SHIPPED.contains("cun't")  # "cun" + "'t" is no clitic of a common word


def _tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


PRIVACY = detector_for()


@pytest.mark.parametrize(
    ("name", "text", "verdict"),
    [
        ("banned_word_in_tags", "hello " + _tags("fuck you"), BANNED_WORD),
        ("email_in_tags", "hi" + _tags(" mail john.smith@example.com"), EMAIL_NOTICE),
        ("phone_in_tags", "hi" + _tags(" call +91 98765 43210"), PHONE_NOTICE),
        ("tag_between_letters_as_a_person_sees_it", "f\U000e0041uck", BANNED_WORD),
    ],
)
def test_ascii_smuggling_in_tag_characters_attack_is_refused(name, text, verdict):
    assert check_message(SHIPPED, PRIVACY, text) == verdict, name


def test_tag_characters_of_a_flag_emoji_are_harmless():
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    assert check_message(SHIPPED, PRIVACY, f"{england} hello") is None
    assert model_reading("plain text") is None
    assert model_reading("caf\u00e9") is None


RLO, PDF = "\u202e", "\u202c"


@pytest.mark.parametrize(
    "text",
    [f"you {RLO}kcuf{PDF} now", f"{RLO}tihs", f"ok {RLO}woN .kcuf\nfine", f"mail {RLO}moc.elpmaxe@nhoj{PDF}"],
)
def test_right_to_left_override_attack_in_a_message_is_refused(text):
    assert check_message(SHIPPED, PRIVACY, text) is not None
    assert displayed_reading(text) != text


def test_displayed_reading_reverses_only_the_overridden_part():
    assert displayed_reading(f"ab {RLO}cde{PDF} fg") == "ab edc" + PDF + " fg"
    assert displayed_reading("no override here") is None
    assert check_message(SHIPPED, PRIVACY, f"{RLO}olleh, a normal word{PDF}") is None


@pytest.mark.parametrize("transform", [to_v2_answer_text, to_v1_answer_text])
def test_right_to_left_override_attack_in_an_answer_is_masked_as_displayed(transform):
    text = f"you {RLO}kcuf{PDF} and \u202dshit{PDF} now"
    sent = mask_answer(text, SHIPPED, transform=transform)
    assert RLO not in sent and "\u202d" not in sent
    assert "****" in sent and "kcuf" in sent  # shown in logical order now: not the word


# --------------------------------------------------------------------------- third round
#: Single-character substitutions from the public leet alphabets that the
#: first table lacked, per letter.
MORE_LEET = {"c": "\u00a2\u00a9", "s": "\u00a7", "t": "\u2020", "r": "\u00ae", "o": "\u00b0", "b": "6",
             "g": "9", "k": "\u03ba", "n": "\u03b7"}


@pytest.mark.parametrize("letter", sorted(MORE_LEET))
def test_more_leet_substitutions_attack_is_caught_in_every_position(letter):
    missed = []
    for word in sorted(SHIPPED.entries):
        for i, ch in enumerate(word):
            if ch != letter:
                continue
            for sub in MORE_LEET[letter]:
                written = word[:i] + sub + word[i + 1 :]
                if not SHIPPED.contains(f"you {written} there"):
                    missed.append(written)
    assert missed == []


@pytest.mark.parametrize(
    "text",
    ["\u00a9 2026 Acme Ltd.", "see \u00a7 5 of the act", "it is 20\u00b0C today", "Acme\u00ae Widgets",
     "Smith \u2020 1901", "6 or 9", "\u03ba and \u03b7 in the formula", "a \u00a2 is a cent", "69 apples",
     "\u043c\u0430\u0439\u043a", "\u0448\u043a\u043e\u043b\u0430 \u043f\u0438\u0432\u043e"],
)
def test_text_using_the_new_leet_characters_for_what_they_are_is_not_refused(text):
    assert not SHIPPED.contains(text), text
