"""Phone numbers written as words, joined by commas, and the constants of
programs (docs/SECURITY.md §3), generated per class rather than hand-picked:

* every digit spelt out in English, Spanish, French, German or romanised
  Hindi, also mixed with digits, with "oh" for zero, "double"/"triple", in
  English pairs ("ninety-eight"), and with commas or hyphens between words,
  is found; prose with a few number words, counting, recipes and ranges is not;
* digit groups joined by commas alone that are not thousands are read as a
  number's groups; thousands (Western and Indian) and lists are not;
* a power of two (or one less) or of ten (or one less) is a program's
  constant, except after "+" and a country code;
* a streamed answer with these forms equals the whole-text mask, with bounded
  work on 64 KiB of them."""

from __future__ import annotations

import random

import pytest
from chat_server.moderation import AnswerFilter, BannedWords, mask_answer
from chatcore.privacy import PHONE_MASK, detector_for, find_personal_data, mask_personal_data
from hypothesis import given, settings
from hypothesis import strategies as st

DIGIT_WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "fr": ["z\u00e9ro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "de": ["null", "eins", "zwei", "drei", "vier", "f\u00fcnf", "sechs", "sieben", "acht", "neun"],
    "hi": ["shunya", "ek", "do", "teen", "chaar", "paanch", "chhe", "saat", "aath", "nau"],
}
#: Numbers a person gives: Indian mobiles, a US and a UK number with country code.
NUMBERS = ["9876543210", "9123456789", "7012345678", "8123456789", "+12127365000", "+442079460958",
           "02079460958"]


def spell(number: str, lang: str, sep: str = " ") -> str:
    words = DIGIT_WORDS[lang]
    lead = ""
    digits = number
    if number.startswith("+"):
        lead, digits = "+", number[1:]
    out = [words[int(d)] for d in digits]
    return lead + sep.join(out)


@pytest.mark.parametrize("lang", sorted(DIGIT_WORDS))
@pytest.mark.parametrize("sep", [" ", "-", ", ", " - "])
def test_every_number_spelt_digit_by_digit_in_each_language_attack_is_found(lang, sep):
    missed = []
    for number in NUMBERS:
        text = f"my number is {spell(number, lang, sep)} call me"
        if PHONE_MASK not in mask_personal_data(text):
            missed.append(text)
    assert not missed, missed


@pytest.mark.parametrize("text", [
    "call nine eight seven six five four three two one oh",
    "call nine eight seven six five, four three two one zero",
    "call double nine one two three four five six seven eight",
    "call nine triple eight seven six five four three two",
    "call ninety-eight seventy-six fifty-four thirty-two ten",
    "call ninety eight, seventy six, fifty four, thirty two, ten",
    "call 98 seven 6 five 4 three two 1 0 now",
    "call 98765 four three two one zero",
    "call +1 two one two seven three six five zero zero zero",
    "call Nine Eight Seven Six Five Four Three Two One Zero",
    "CALL NINE EIGHT SEVEN SIX FIVE FOUR THREE TWO ONE ZERO",
    "llama al nueve ocho siete seis cinco cuatro tres dos uno cero",
    "appelle le z\u00e9ro deux zero sept neuf quatre six zero neuf cinq huit",
    "ruf an: neun acht sieben sechs f\u00fcnf vier drei zwei eins null",
])
def test_a_number_spelt_in_words_attack_is_found(text):
    assert PHONE_MASK in mask_personal_data(text), text


def test_the_mask_covers_every_word_of_a_spelt_number():
    text = "ring double nine eight seven six five four three two one today"
    assert mask_personal_data(text) == f"ring {PHONE_MASK} today"


@pytest.mark.parametrize("text", [
    "one or two", "three to five days", "twenty-five to thirty minutes", "one, two, three, go!",
    "Add two eggs, one cup of flour, three tablespoons of sugar and a pinch of salt; bake for twenty-five "
    "to thirty minutes at one hundred and eighty degrees, then let it rest for five or ten minutes.",
    "one two three four five six seven eight nine ten",
    "ten nine eight seven six five four three two one liftoff",
    "Chapter one, section two, paragraph three, line four, word five, letter six.",
    "It costs nine ninety-nine, or two for fifteen.",
    "oh well, oh my, oh no, do it, un jour, ein Tag, char c = 'x';",
    "Do you want one or two? I do. Two, please, or three; four at most.",
    "The score was two-one, then three-one, then four-two, and finally five-two.",
    "uno, dos, tres, cuatro, cinco, seis, siete, ocho, nueve, diez",
    "un, deux, trois, quatre, cinq, six, sept, huit, neuf, dix",
    "eins, zwei, drei, vier, f\u00fcnf, sechs, sieben, acht, neun, zehn",
    "ek do teen chaar paanch chhe saat aath nau das",
    "There were twenty-one, thirty-two, forty-three and fifty-four of them.",
    "someone gave everyone ninety seconds; nobody won, often none at all",
])
def test_prose_with_number_words_is_not_a_phone_number(text):
    assert find_personal_data(text) == [], find_personal_data(text)


# ------------------------------------------------------------------ commas
@pytest.mark.parametrize("number", ["9876543210", "9123456789", "2127365000"])
@pytest.mark.parametrize("groups", [(3, 3, 4), (5, 5), (4, 3, 3), (2, 4, 4)])
def test_digit_groups_joined_by_commas_attack_is_found(number, groups):
    parts, pos = [], 0
    for g in groups:
        parts.append(number[pos : pos + g])
        pos += g
    text = f"call {','.join(parts)} now"
    assert PHONE_MASK in mask_personal_data(text), text


def test_thousands_and_lists_with_commas_are_not_phone_numbers():
    rng = random.Random(4)
    texts = []
    for _ in range(300):
        v = rng.randrange(10**6, 10**12)
        texts.append(f"total {v:,} units")
        # Indian grouping: the last three digits, then pairs.
        s = str(v)
        head, tail = s[:-3], s[-3:]
        pairs = [head[max(0, i - 2) : i] for i in range(len(head), 0, -2)][::-1]
        texts.append(f"Rs {','.join(pairs)},{tail}")
        texts.append(",".join(str(rng.randrange(1, 100)) for _ in range(rng.randrange(3, 8))))
        texts.append(", ".join(str(rng.randrange(1, 10**5)) for _ in range(rng.randrange(3, 8))))
    found = [(t, [p.text for p in find_personal_data(t)]) for t in texts]
    assert [f for f in found if f[1]] == []


# ------------------------------------------------------------------ constants
@pytest.mark.parametrize("template", ["MAX = {}", "x = {}", "const long LIMIT = {};", "mask {}", "{}"])
def test_powers_of_two_and_ten_in_code_are_not_phone_numbers(template):
    values = [2**n for n in range(20, 64)] + [2**n - 1 for n in range(20, 64)] \
        + [10**n for n in range(6, 16)] + [10**n - 1 for n in range(6, 16)]
    found = [template.format(v) for v in values if find_personal_data(template.format(v))]
    assert found == []


@pytest.mark.parametrize("text", ["+1 2147483647", "phone = 98765 43210", "call 9876543210"])
def test_a_number_after_a_country_code_or_not_a_constant_is_still_found(text):
    assert PHONE_MASK in mask_personal_data(text)


# ------------------------------------------------------------------ streaming
def test_a_number_word_and_its_comma_wait_for_the_next_word():
    filt = AnswerFilter(BannedWords(["abcxyz"]))
    assert filt.feed("One") == ""
    assert filt.feed(",") == ""  # "One, two, three…" may still spell a number
    assert filt.feed(" apple") == "One, "
    assert filt.finish() == "apple"


PIECES = [
    "nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "zero", "oh", "double", "triple",
    "twenty", "ninety", "ten", "fifteen", "nueve", "cinco", "deux", "neuf", "z\u00e9ro", "acht", "f\u00fcnf",
    "ek", "do", "teen", "un", "nin", "tw", "on", "ones", "someone", "tent", "98", "765", "4", "3210", "98765",
    "43210", "987,654,3210", "98765,43210", "1,234", "1,234,567", "12,34,567", ",", "2147483647", "+91", "+1",
    "call", "or", "days", "x", "=",
]
SEPARATORS = [" ", " ", ", ", "-", "", "\n", ". ", " - ", ","]
number_word_texts = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=25).map(
    lambda items: "".join(w + s for w, s in items))
BANNED = BannedWords(["abcxyz"])


def _stream(parts: list[str]) -> str:
    filt = AnswerFilter(BANNED)
    return "".join(filt.feed(p) for p in parts) + filt.finish()


@settings(max_examples=500, deadline=None)
@given(text=number_word_texts, cuts=st.lists(st.integers(min_value=0, max_value=250), max_size=20))
def test_streaming_equals_whole_text_mask_with_spelt_and_comma_numbers(text, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    parts = [text[i:j] for i, j in zip([0, *points], [*points, len(text)], strict=True)]
    whole = mask_answer(text, BANNED)
    assert _stream(parts) == whole
    assert _stream(list(text)) == whole


@settings(max_examples=100, deadline=None)
@given(number=st.sampled_from(NUMBERS), lang=st.sampled_from(sorted(DIGIT_WORDS)),
       cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_a_spelt_number_streamed_in_any_pieces_is_masked(number, lang, cuts):
    text = f"call {spell(number, lang)} now"
    points = sorted({min(c, len(text)) for c in cuts})
    parts = [text[i:j] for i, j in zip([0, *points], [*points, len(text)], strict=True)]
    out = _stream(parts)
    assert out == mask_answer(text, BANNED)
    assert PHONE_MASK in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("text", [
    ("nine eight seven six " * 4000)[:65536], ("one, two, three, " * 4000)[:65536],
    ("double " * 10000)[:65536], ("987,654,3210," * 6000)[:65536], ("1," * 32768),
    ("twenty-" * 10000)[:65536], ("oh " * 22000)[:65536], ("nin" * 22000)[:65536],
])
def test_number_word_and_comma_readings_are_linear_on_adversarial_input(text):
    det = detector_for()
    det.find(text)  # completes (the test's timeout bounds it)
    filt = AnswerFilter(BANNED)
    out = [filt.feed(text[i : i + 256]) for i in range(0, len(text), 256)]
    out.append(filt.finish())
    assert "".join(out) == mask_answer(text, BANNED)
    # Each character is looked at a bounded number of times, and little is held.
    assert filt.scanned <= 160 * len(text)


@pytest.mark.parametrize("text", [
    "9\toh\n876543210\neight@)",  # found by a fuzzer: a cut at "oh" read it as a word
    "call 9 oh 8765432 10 ok", "call twenty one 98765432 ok", "call double 9 87654321 ok",
    "call ninety eight 76543210 ok", "USD 987654,3210! and Rs 6,101425 twenty",
])
def test_a_cut_never_parts_a_number_word_from_the_word_it_reads_by(text):
    # "oh" is a zero by the number before it, "one" a unit of "twenty", "9" doubled by
    # "double": the filter must not restart its scan between them.
    whole = mask_answer(text, BANNED)
    assert _stream(list(text)) == whole
    assert all(_stream([text[:i], text[i:]]) == whole for i in range(len(text) + 1))
