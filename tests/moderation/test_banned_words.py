"""BannedWords: obfuscations are caught, innocent words are not (Scunthorpe)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chat_server.moderation import BannedWords, parse_word_list

REPO = Path(__file__).resolve().parents[2]
WORDS = BannedWords(["abcxyz", "ass", "cunt", "shit", "son of a bitch", "go to hell now"])


@pytest.mark.parametrize(
    "text",
    [
        "abcxyz",
        "ABCXYZ",
        "AbCxYz",
        "you abcxyz!",
        "abcxyz123",
        "(abcxyz)",
        "a.b.c.x.y.z",
        "a-b-c-x-y-z",
        "a_b_c_x_y_z",
        "a b c x y z",
        "a . b . c . x . y . z",
        "abc-xyz",
        "abc.xyz",
        "abccxyyz",  # stretched letters
        "abcxyzzzz",
        "\uff21\uff22\uff23\uff38\uff39\uff3a",  # fullwidth
        "abc\u200bxyz",  # zero-width space
        "abc\u00adxyz",  # soft hyphen
        "\u0430b\u0441xyz",  # Cyrillic a and c
        "\u0410\u0412\u0421\u0425\u0423Z",  # Cyrillic capitals
        "\u0455hit",  # Cyrillic dze (not folded by NFKC)
        "sh1t",
        "$h!t",
        "5h1t",
        "@ss",
        "a$$",
        "s.h.i.t",
        "s h i t",
        "shiiiit",
        "sh\u0131\u0307t",  # dotless i + combining dot
        "s\u0336h\u0336i\u0336t\u0336",  # strike-through combining marks
        "sh\u00eft",  # accents
    ],
)
def test_obfuscated_banned_words_are_found(text):
    assert WORDS.contains(text), text
    assert WORDS.mask(text) != text


@pytest.mark.parametrize(
    "text",
    [
        "a classic assessment",
        "bass guitar",
        "the assassin passed the class",
        "Scunthorpe United",
        "as I said",  # "as" does not stretch "ass"
        "cocktail hour",
        "shiitake mushrooms",
        "I have 3 cats",
        "version 4.5.5 on 2024-01-15",
        "room 455",  # digits alone are not leetspeak
        "the A55 is closed",
        "who re-entered the room",
        "abc xyz",  # two whole words are not joined across a space
        "son of a gun",
        "go to hell tomorrow",
        "a\nb\nc\nx\ny\nz",  # a line break is a boundary
        "",
    ],
)
def test_innocent_text_is_clean(text):
    assert not WORDS.contains(text), WORDS.find(text)
    assert WORDS.mask(text) == text


def test_spans_are_in_the_original_text_and_mask_keeps_length():
    text = "well \uff21\uff22\uff23\uff38\uff39\uff3a! and a.b.c.x.y.z, ok"
    spans = WORDS.find(text)
    assert [text[s:e] for s, e in spans] == ["\uff21\uff22\uff23\uff38\uff39\uff3a", "a.b.c.x.y.z"]
    masked = WORDS.mask(text)
    assert masked == "well ******! and ***********, ok"
    assert len(masked) == len(text)


def test_only_the_letters_of_a_padded_word_are_masked():
    assert WORDS.mask("abcxyz!!") == "******!!"
    assert WORDS.mask("abcxyz123 x") == "******123 x"


def test_phrases_match_across_separators_and_leetspeak():
    assert WORDS.find("you son of a bitch") == [(4, 18)]
    assert WORDS.contains("s0n 0f a b1tch")
    assert WORDS.contains("son-of-a-bitch")
    assert WORDS.contains("sonofabitch")  # the phrase's letters as one word
    assert WORDS.mask("go to hell now, please") == "**************, please"
    assert not WORDS.contains("go to hell")


def test_single_letter_words_in_the_list_are_ignored():
    words = BannedWords(["a", "i"])
    assert not words.contains("a cat and i")


def test_word_list_comments_and_blank_lines():
    assert parse_word_list("# header\n\nfoo\n  bar baz  # phrase\n#x\n") == ["foo", "bar baz"]


def test_from_file_reads_the_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# list\nzorblax\n", encoding="utf-8")
    words = BannedWords.from_file(path)
    assert words.contains("ZORBLAX!")
    assert not words.contains("abcxyz")


def test_from_file_reports_a_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="banned-words file not found"):
        BannedWords.from_file(missing)


def test_default_list_has_the_test_word_and_spares_innocent_words():
    words = BannedWords.from_file(REPO / "cuss_words.txt")
    assert "abcxyz" in words.entries
    for text in ["ABCXYZ", "sh1t", "F.U.C.K", "you motherfucker", "son of a b1tch"]:
        assert words.contains(text), text
    for text in [
        "a classic assessment of bass guitar",
        "Scunthorpe and Penistone",
        "the assassin's cocktail",
        "Dick Cheney and Moby Dick",
        "hello, how are you?",
        "shiitake, Essex, Sussex, Middlesex",
        "grape, therapist, cockpit, hancock",
    ]:
        assert not words.contains(text), (text, words.find(text))


def test_a_large_list_is_still_one_lookup_per_token():
    # 5000 entries must not turn into 5000 regexes: matching stays correct.
    words = BannedWords([f"zz{i:04d}word" for i in range(5000)] + ["abcxyz"])
    assert words.contains("x abcxyz y")
    assert words.contains("zz4999word")
    assert not words.contains("zz5000word")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        "a " * 32768,
        "a." * 32768,
        "s h i " * 10900,
        "x" * 65536,
        "son of a " * 7000,
        "a" * 65535 + "!",
        "ab" * 32768,
        "\u200b" * 65536,
        "a\u0301" * 32768,
    ],
    ids=lambda t: repr(t[:8]),
)
def test_adversarial_64k_inputs_finish(text):
    spans = WORDS.find(text)
    assert all(0 <= s < e <= len(text) for s, e in spans)


# ------------------------------------------ the Scunthorpe problem (docs/SECURITY.md §4)
DEFAULT = BannedWords.from_file(REPO / "cuss_words.txt")


@pytest.mark.parametrize(
    "text",
    [
        "assess",
        "re-assess",
        "We need to assess the risk",
        "Shiite",
        "Shi'ite scholars",
        "who're they?",
        "Who\u2019re you?",
        "Er a\u00df einen Apfel",
        "Scheisse ist kein Wort hier, aber Kassette schon",
        "classic bass assassin Scunthorpe",
    ],
)
def test_innocent_words_attack_is_not_refused(text):
    assert not DEFAULT.contains(text), DEFAULT.find(text)


@pytest.mark.parametrize(
    "text",
    [
        "fuuuck",
        "fuuuuuuuuck",
        "shiiiit",
        "a$$",
    ],
)
def test_stretched_words_are_still_matched(text):
    assert DEFAULT.contains(text)


@pytest.mark.parametrize(
    ("attack", "text"),
    [
        ("small_capitals", "\ua730\u1d1c\u1d04\u1d0b"),  # ꜰᴜᴄᴋ
        ("small_capitals_bitch", "\u0299\u026a\u1d1b\u1d04\u029c"),  # ʙɪᴛᴄʜ
        ("negative_circled_letters", "\U0001f155\U0001f164\U0001f152\U0001f15a"),  # 🅕🅤🅒🅚
        ("circled_letters", "\u24d5\u24e4\u24d2\u24da"),  # ⓕⓤⓒⓚ
        ("negative_squared_letters", "\U0001f175\U0001f184\U0001f172\U0001f17a"),
        ("regional_indicators", "\U0001f1eb\U0001f1fa\U0001f1e8\U0001f1f0"),
        ("mathematical_letters", "\U0001d41f\U0001d42e\U0001d41c\U0001d424"),
        ("armenian_substitutes", "f\u057dck"),  # Armenian ս
        ("cyrillic_substitutes", "\u0455\u04bb\u0456t"),  # ѕһіt
        ("greek_substitutes", "\u03c1ussy sh\u03b9t"),  # ι
        ("cherokee_substitutes", "\u13aas\u0455"),  # Ꭺsѕ
        ("hangul_filler_between_letters", "f\u3164u\u3164c\u3164k"),
        ("hangul_choseong_filler", "f\u115fu\u1160ck"),
        ("halfwidth_hangul_filler", "f\uffa0uck"),
        ("word_joiner", "f\u2060u\u2060c\u2060k"),
        ("variation_selectors", "f\ufe0fu\ufe0fck"),
        ("tag_characters", "f\U000e0041uck"),
        ("mongolian_vowel_separator", "sh\u180eit"),
        ("combining_grapheme_joiner", "sh\u034fit"),
        ("braille_blank_between_letters", "f\u2800u\u2800c\u2800k"),
    ],
    ids=lambda v: v if v.isascii() else "",
)
def test_lookalike_attack_is_caught(attack, text):
    assert DEFAULT.contains(text), attack
    assert DEFAULT.mask(text) != text


def test_real_words_of_other_scripts_are_not_read_as_english():
    for text in ["\u0441\u043e\u0431\u0430\u043a\u0430", "\u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1",
                 "\u0928\u092e\u0938\u094d\u0924\u0947"]:
        assert not DEFAULT.contains(text), text


def _excused_by_form(flagged_span: str, entries: set[str]) -> bool:
    """A flagged span in a dictionary word is fine when it is literally a
    listed word (``shit`` in ``shit's``) or an emphatic stretch (``fuuuuck``)."""
    from chat_server.moderation.banned_words import _literal

    lit = _literal(flagged_span)
    return lit in entries or any(c * 3 in lit for c in set(lit))


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "de", "fr", "es", "hi", "ru", "uk", "el"])
def test_no_common_word_is_refused(lang):
    # The TOP_WORDS most frequent words of each language (wordfreq; Hindi
    # romanised): none is refused unless it is, literally, a listed word.
    import wordfreq
    from anyascii import anyascii
    from chat_server.moderation.banned_words import _literal
    from chat_server.moderation.lexicon import TOP_WORDS

    words = wordfreq.top_n_list(lang, TOP_WORDS)
    if lang == "hi":
        words = [anyascii(w).lower() for w in words]
    assert len(words) >= (TOP_WORDS if lang not in ("hi", "el") else 20_000)
    entries = {_literal(e) for e in DEFAULT.entries}
    refused = [
        w for w in words
        if any(not _excused_by_form(w[s:e], entries) for s, e in DEFAULT.find(w))
    ]
    assert refused == []
    # Title case and all capitals are the same words.
    sample = words[:5000]
    assert [w for w in sample if DEFAULT.find(w.title()) and not DEFAULT.find(w)] == []
