"""The moderation worker (chat_server.moderation.worker): costly checks of
messages and answer steps run in a process of their own, with exactly the
verdicts and masks of the checks done in the server's process; the steps left
on the event loop are bounded; a dead worker is replaced and its steps run in
a thread meanwhile."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server.moderation import AnswerFilter, BannedWords, mask_answer
from chat_server.moderation.answer_filter import MAX_WORD
from chat_server.moderation.worker import (
    BANNED_WORD,
    HEAVY_DIGITS,
    INLINE_CHARS,
    DetectionWorker,
    SteppedAnswerFilter,
    check_message,
    message_inline,
    numeric_chars,
)
from chatcore.privacy import PHONE_NOTICE, detector_for
from chatcore.protocol import to_v1_text
from hypothesis import given, settings
from hypothesis import strategies as st

SHIPPED = BannedWords.from_file(Path(__file__).resolve().parents[2] / "cuss_words.txt")
PRIVACY = detector_for()
SLICE = 128  # chat_server.turn.FILTER_SLICE_CHARS

_rng = random.Random(10)

# Texts built to make one detector call as long as possible (docs/BENCHMARKS.md,
# "Stalls": a
# 64 KiB message of `+1 234 ` and a 1 MB answer of single digits stalled the
# other sessions). Each is a message (it must not be checked on the loop) and
# an answer (its costly steps must not run on the loop).
ATTACKS = {
    "phone_fragments": "+1 234 " * 600,
    "single_digits": "1 " * 2000,
    "random_single_digits": " ".join(_rng.choice("0123456789") for _ in range(2000)),
    "random_digit_groups": " ".join(str(_rng.randrange(100, 1000)) for _ in range(1000)),
    "bracketed_digits": "(1) " * 1000,
    "digit_run_with_hyphens": "x " + "-".join(_rng.choice("0123456789") for _ in range(2000)),
    "digit_run_with_dots": "1 . " * 1000,
    "one_long_number": "9" * 4000,
    "enclosed_digits": "\u277e " * 2000,
    "fullwidth_digit_groups": " ".join("\uff11\uff12\uff13" for _ in range(1000)),
    "arabic_indic_digits": "\u0661\u0662\u0663 " * 1000,
    "cjk_numerals": "\u4e00\u4e8c\u4e09 " * 1000,
    "long_word_without_spaces": "ab" * 3000,
    "long_word_after_a_space": "x " + "ab" * 3000,
    "many_at_signs": "@" * 4000,
    "at_signs_glued_to_letters": "a@" * 2000,
    "many_short_addresses": "a@b.co " * 600,
    "obfuscated_addresses": "raj at gmail dot " * 250,
    "escaped_at_signs": "%40&#64;" * 500,
    "overlapping_banned_hits": "s h i t " * 500,
    "confusable_banned_words": "\u0455\u04bb\u0456\u0442 " * 800,
    "one_confusable_word": "x " + "\u0455\u04bb\u0456" * 1300,
    # second round: classes that still got through (docs/SECURITY.md §3, §4)
    "guillemet_at_forms": "raj\u00abat\u00bbgmail\u00b7" * 400,
    "line_breaks_around_at_signs": "a\n@\n" * 1000,
    "keycap_digits": "9\ufe0f\u20e3" * 1500,
    "minus_separated_digits": "1\u2212" * 2000,
    "tag_characters": "".join(chr(0xE0000 + ord(c)) for c in "fuck you 98765 43210 ") * 200,
    "single_letters_with_pipes": "f|u|c|k " * 500,
    "spelt_out_at_the_rate": "raj at the rate gmail dot " * 150,
}


@pytest.fixture(scope="module")
def worker() -> Iterator[DetectionWorker]:
    w = DetectionWorker(respawn_interval=0)
    w.start(SHIPPED, PRIVACY)
    yield w
    w.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


#: No time budget for steps on the loop: where a step runs then depends on the
#: text alone, not on how busy the machine is (the budget has its own test).
UNTIMED = math.inf


async def stepped(worker: DetectionWorker, text: str, *, slice_chars: int = SLICE,
                  transform=None) -> tuple[str, SteppedAnswerFilter, int]:  # type: ignore[no-untyped-def]
    """``text`` through a stepped filter in the turn's slices; also the most a
    step on the loop scanned beyond its slice. Checks that no step on the
    loop had HEAVY_DIGITS new digits (a bounded number of phone checks)."""
    filt = SteppedAnswerFilter(AnswerFilter(SHIPPED, transform=transform), worker,
                               step_budget=UNTIMED)
    out = []
    most_local = 0
    for i in range(0, len(text), slice_chars):
        piece = text[i : i + slice_chars]
        before_scanned, before_local = filt.scanned, filt.local_steps
        out.append(await filt.feed(piece))
        if filt.local_steps > before_local:
            most_local = max(most_local, filt.scanned - before_scanned - slice_chars)
            assert numeric_chars(piece) < HEAVY_DIGITS
    out.append(await filt.finish())
    return "".join(out), filt, most_local


# --------------------------------------------------------------------------- the routing rules
def test_numeric_characters_count_every_digit_form_the_phone_scan_reads():
    assert numeric_chars("call 98765 43210") == 10
    assert numeric_chars("\u277e\uff11\u0661\u4e00\u2460") == 5
    assert numeric_chars("no digits at all, \u00e9t\u00e9") == 0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_attack_message_is_checked_on_the_event_loop(name):
    assert not message_inline(ATTACKS[name])


def test_short_messages_with_few_digits_are_checked_on_the_event_loop():
    assert message_inline("What is the capital of France? Answer in 3 words.")
    assert not message_inline("call me at 98765 43210")  # a phone scan's worth of digits
    assert not message_inline("a" * (INLINE_CHARS + 1))


# --------------------------------------------------------------------------- same verdicts, same masks
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_worker_judges_each_attack_message_as_the_server_process_does(worker, name):
    text = ATTACKS[name]
    assert run(worker.run(check_message, SHIPPED, PRIVACY, text)) == check_message(SHIPPED, PRIVACY, text)


def test_the_worker_refuses_what_the_server_process_refuses(worker):
    long = "tell me more " * 60
    assert run(worker.check_message(SHIPPED, PRIVACY, long + "you shit")) == BANNED_WORD
    assert run(worker.check_message(SHIPPED, PRIVACY, long + "+1 212 736 5000")) == PHONE_NOTICE
    assert run(worker.check_message(SHIPPED, PRIVACY, long)) is None


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_attack_answer_is_masked_exactly_and_the_loop_steps_stay_bounded(worker, name):
    text = ATTACKS[name]
    out, filt, most_local = run(stepped(worker, text))
    assert out == mask_answer(text, SHIPPED)
    # A step left on the loop has fewer than HEAVY_DIGITS new digits (so a
    # bounded number of phone checks) and scans its slice plus a window of
    # about one longest word, whatever the answer.
    assert most_local <= 2 * MAX_WORD
    if numeric_chars(text) >= len(text) // 8:
        assert filt.remote_steps > 0
    assert filt.local_steps + filt.remote_steps > 0


def test_digit_heavy_slices_go_to_the_worker_and_prose_stays_on_the_loop(worker):
    prose = "The quick brown fox jumps over the lazy dog, again and again. " * 10
    _, filt, _ = run(stepped(worker, prose))
    assert filt.remote_steps == 0 and filt.local_steps > 0
    numbers = "call 98765 43210 or 98765 43211 or 98765 43212 today " * 10
    out, filt, _ = run(stepped(worker, numbers))
    assert filt.remote_steps > 0
    assert out == mask_answer(numbers, SHIPPED)


def test_an_answer_stays_in_the_worker_from_its_first_digit_heavy_slice_on(worker):
    async def scenario() -> tuple[bool, bool, int, int, str]:
        filt = SteppedAnswerFilter(AnswerFilter(SHIPPED), worker, step_budget=UNTIMED)
        out = [await filt.feed("Here is the list you asked for: ")]
        before = filt.remote
        out.append(await filt.feed("98765 43210, 98765 "))  # a run still open when it goes
        out.append(await filt.feed("43211 and that is all."))
        out.append(await filt.finish())
        return before, filt.remote, filt.local_steps, filt.remote_steps, "".join(out)

    before, after, local, remote, out = run(scenario())
    assert (before, after, local, remote) == (False, True, 1, 3)
    assert out == mask_answer("Here is the list you asked for: 98765 43210, 98765 43211 and that is all.", SHIPPED)



def test_a_step_on_the_loop_over_its_time_budget_sends_the_rest_of_the_answer_to_the_worker(worker):
    async def scenario() -> tuple[bool, int, int, str]:
        # Budget 0: every step on the loop is over it, however fast.
        filt = SteppedAnswerFilter(AnswerFilter(SHIPPED), worker, step_budget=0.0)
        out = [await filt.feed("Plain prose, nothing to find here. ")]
        after_first = filt.remote
        out.append(await filt.feed("And more prose after it. "))
        out.append(await filt.finish())
        return after_first, filt.local_steps, filt.remote_steps, "".join(out)

    after_first, local, remote, out = run(scenario())
    assert (after_first, local, remote) == (True, 1, 2)
    assert out == "Plain prose, nothing to find here. And more prose after it. "


PIECES = ["w12", "2019", "v3.2", "(212)", "736-5000", "0044", "+91", "98765", "43210", "raj", "@", "gmail",
          ".com", "at", "dot", "shit", "s", "h", "i", "t", "son", "of", "a", "bitch", "\u0455\u04bb\u0456\u0442",
          "\u277e\u277e\u277e", "$", "1,299", "12:30", "a716", "/", "="]
SEPARATORS = ["", " ", " ", "\n", ", ", ". ", "-", "(", ")", "\u00a0"]
texts = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=40).map(
    lambda items: "".join(w + s for w, s in items))


@settings(max_examples=60, deadline=None)
@given(text=texts, slice_chars=st.integers(min_value=1, max_value=40), v1=st.booleans())
def test_a_stream_through_the_worker_equals_the_whole_text_mask_for_any_split(worker, text, slice_chars, v1):
    transform = to_v1_text if v1 else None
    out, _, _ = run(stepped(worker, text, slice_chars=slice_chars, transform=transform))
    assert out == mask_answer(text, SHIPPED, transform=transform)


def test_a_filter_travels_as_its_state_and_the_lists_entries():
    filt = AnswerFilter(SHIPPED, transform=to_v1_text)
    first = filt.feed("call me at 98765 ")
    copy = pickle.loads(pickle.dumps(filt))
    # Not the lexicon or the look-alike tables: what a step carries is small.
    assert len(pickle.dumps(filt)) < 8192
    assert first + copy.feed("43210 today") + copy.finish() == mask_answer(
        "call me at 98765 43210 today", SHIPPED, transform=to_v1_text)
    assert pickle.loads(pickle.dumps(PRIVACY)).regions == PRIVACY.regions


# --------------------------------------------------------------------------- failures
def test_a_killed_worker_is_replaced_and_the_step_runs_in_a_thread_meanwhile():
    async def scenario() -> tuple[int, int, list[str | None], int]:
        w = DetectionWorker(respawn_interval=0)
        w.start(SHIPPED, PRIVACY)
        text = "tell me more " * 60 + "+1 212 736 5000"
        try:
            first = await w.run(os.getpid)
            assert first != os.getpid()
            os.kill(first, signal.SIGKILL)
            await asyncio.sleep(0.2)
            verdicts = [await w.check_message(SHIPPED, PRIVACY, text) for _ in range(3)]
            return first, await w.run(os.getpid), verdicts, w.fallbacks
        finally:
            w.close()

    first, second, verdicts, fallbacks = run(scenario())
    assert verdicts == [PHONE_NOTICE] * 3
    assert fallbacks == 1  # the step the worker died under ran in a thread
    assert second not in (first, os.getpid())  # a new worker process


def test_a_worker_that_was_never_started_runs_the_steps_in_a_thread():
    async def scenario() -> tuple[str | None, str, int, int]:
        w = DetectionWorker()
        verdict = await w.check_message(SHIPPED, PRIVACY, "1 " * 1000 + "you shit")
        out, filt, _ = await stepped(w, "call 98765 43210 now " * 20)
        return verdict, out, filt.remote_steps, w.steps

    verdict, out, remote, steps = run(scenario())
    assert verdict == BANNED_WORD
    assert out == mask_answer("call 98765 43210 now " * 20, SHIPPED)
    assert remote > 0 and steps == 0


def test_a_huge_word_is_not_kept_in_memory_after_it_was_checked():
    # The word-shape cache remembered every token it saw, up to 8192 of them:
    # megabyte "words" of hostile messages stayed in the process (the worker's
    # RSS grew by hundreds of MiB in bench/holdback.py's 3 MB cases).
    import gc
    import tracemalloc

    SHIPPED.contains("warm up " + "ab" * 100)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert not SHIPPED.contains("x " + "ab" * 500_000 + " y")
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 256 * 1024, kept
