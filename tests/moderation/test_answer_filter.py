"""AnswerFilter: streaming masking equals whole-text masking, and text flows early."""

from __future__ import annotations

import pytest
from chat_server.moderation import AnswerFilter, BannedWords, mask_answer
from hypothesis import given, settings
from hypothesis import strategies as st

BANNED = BannedWords(["abcxyz", "ass", "shit", "son of a bitch", "go to hell now"])


def stream(parts: list[str], banned: BannedWords = BANNED, **kw: bool) -> tuple[str, list[str]]:
    filt = AnswerFilter(banned, **kw)
    outs = [filt.feed(p) for p in parts]
    outs.append(filt.finish())
    return "".join(outs), outs


def test_prose_is_emitted_before_the_end():
    text = "Hello there, how are you today? "
    parts = [text[i : i + 3] for i in range(0, len(text), 3)]
    joined, outs = stream(parts)
    assert joined == text
    early = "".join(outs[:-1])
    assert early.startswith("Hello there, how are you")
    assert len(early) >= len(text) * 2 // 3


def test_a_line_break_releases_everything_before_it():
    filt = AnswerFilter(BANNED)
    assert filt.feed("call 98765") == ""
    assert filt.feed(" 43210\n") == "call [phone removed]\n"
    assert filt.pending == 0


def test_a_banned_word_split_across_tokens_is_masked():
    joined, _ = stream(["you ab", "cx", "yz! and s", "h", "1t there"])
    assert joined == "you ******! and **** there"


def test_a_phone_number_split_across_tokens_is_held_then_masked():
    filt = AnswerFilter(BANNED)
    out = filt.feed("Call +91 98")
    out += filt.feed("765 ")
    assert "98" not in out
    out += filt.feed("43210 now please")
    out += filt.finish()
    assert out == "Call [phone removed] now please"
    assert filt.masked


def test_an_email_split_across_tokens_is_masked():
    joined, _ = stream(["write to raj", ".kumar@exa", "mple.co", ".in today"])
    assert joined == "write to [email removed] today"


def test_a_phrase_split_across_tokens_is_masked():
    joined, _ = stream(["you son ", "of a ", "bitch!"])
    assert joined == "you **************!"
    joined, _ = stream(["you son ", "of a ", "gun!"])
    assert joined == "you son of a gun!"


def test_masked_flag():
    assert stream(["nothing to see"])[0] == "nothing to see"
    filt = AnswerFilter(BANNED)
    filt.feed("all clean here ")
    filt.finish()
    assert not filt.masked
    filt = AnswerFilter(BANNED)
    filt.feed("an ass")
    filt.finish()
    assert filt.masked


def test_privacy_can_be_turned_off():
    joined, _ = stream(["mail raj@gmail.com, abcxyz"], privacy=False)
    assert joined == "mail raj@gmail.com, ******"


def test_banned_word_overlapping_personal_data_is_masked_outside_it():
    text = "abcxyz@example.com and shit@example.com"
    assert mask_answer(text, BANNED) == "[email removed] and [email removed]"
    assert stream([text])[0] == mask_answer(text, BANNED)


@pytest.mark.timeout(120)
def test_long_answer_without_safe_cuts_streams_in_bounded_time():
    text = "9" * 65536
    parts = [text[i : i + 7] for i in range(0, len(text), 7)]
    joined, _ = stream(parts)
    assert joined == mask_answer(text, BANNED)


# --------------------------------------------------------------------------- the invariant
PIECES = [
    "hello", "world", "classic", "assessment", "bass", "ass", "abcxyz", "ABCXYZ", "sh1t",
    "s", "h", "i", "t", "a", "b", "c", "x", "y", "z", "son", "of", "bitch", "go", "to",
    "hell", "now", "raj@gmail.com", "raj", "@", "gmail", ".com", "[at]", "[dot]", "at",
    "dot", "com", "98765", "43210", "9876543210", "+91", "(+91)", "+44 20 7946 0958",
    "ext", "123", "2024", "3", "me9876543210", "\u0455hit", "abc\u200bxyz", "\uff41",
    "xx", "\u0669\u0668", "x-", "caf\u00e9", "\u0430ss",
]
SEPARATORS = ["", " ", " ", "  ", "\n", ", ", ". ", "-", "!", "?", " (", ") ", "\u00a0", "\t", ":"]

texts = st.lists(
    st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=30
).map(lambda items: "".join(w + s for w, s in items))
raw_texts = st.text(
    alphabet=st.sampled_from(list("abcxyzsoniht 0123456789\n+-.()[]@!$|xX,'_* \u200b\u00a0\u0430\u0455\uff58")),
    max_size=80,
)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[i:j] for i, j in zip([0, *points], [*points, len(text)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_streaming_equals_whole_text_mask_for_any_split(text, cuts):
    assert stream(split(text, cuts))[0] == mask_answer(text, BANNED)


@settings(max_examples=300, deadline=None)
@given(text=raw_texts, cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=20))
def test_streaming_equals_whole_text_mask_on_raw_characters(text, cuts):
    assert stream(split(text, cuts))[0] == mask_answer(text, BANNED)


@settings(max_examples=150, deadline=None)
@given(text=texts)
def test_streaming_one_character_at_a_time(text):
    assert stream(list(text))[0] == mask_answer(text, BANNED)


def test_mask_answer_is_mask_personal_data_then_banned_words_when_they_do_not_touch():
    from chatcore.privacy import mask_personal_data

    text = "call 9876543210, you ass, or mail raj@gmail.com"
    assert mask_answer(text, BANNED) == BANNED.mask(mask_personal_data(text))
    assert mask_answer(text, BANNED) == "call [phone removed], you ***, or mail [email removed]"


TRICKY = [
    "write raj [at] gmail [dot] com now",
    "write raj (at) gmail (dot) com now",
    "mail raj @ gmail.com now",
    "mail raj@ gmail.com now",
    "call (+91) 98765 43210 now",
    "call +44 20 7946 0958 now",
    "dial 9 8 7 6 5 4 3 2 1 0 now",
    "phone 98765 43210 ext 123 now",
    "phone 98765xx x43210 now",
    "call me9876543210 now",
    "you a b c x y z now",
    "you s h i t now",
    "you son of a bitch now",
    "you son\nof a bitch now",
    "go to hell now ok",
    "so go to hell tomorrow",
    "the ass, the bass, the classic ass.",
]


@pytest.mark.parametrize("text", TRICKY)
def test_every_two_way_split_of_tricky_text_matches_the_whole(text):
    whole = mask_answer(text, BANNED)
    for i in range(len(text) + 1):
        assert stream([text[:i], text[i:]])[0] == whole, i
    assert stream(list(text))[0] == whole
