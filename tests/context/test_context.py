"""Token estimate and history trimming."""

from __future__ import annotations

import pytest
from chat_server.context import MESSAGE_OVERHEAD, estimate_tokens, message_tokens, trim_history


def u(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def a(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def cost(*messages: dict[str, str]) -> int:
    return sum(message_tokens(m) for m in messages)


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2  # rounded up
    assert estimate_tokens("x" * 400) == 100
    assert estimate_tokens("a b c d e f g h") == 8  # at least one per word
    assert message_tokens(u("abcd")) == 1 + MESSAGE_OVERHEAD


def test_budget_zero_keeps_system_and_newest_only() -> None:
    turns = [u("q1"), a("a1"), u("q2"), a("a2"), u("now")]
    messages, trimmed = trim_history(turns, 0, system="be nice")
    assert messages == [{"role": "system", "content": "be nice"}, u("now")]
    assert trimmed == 4


def test_huge_single_message_is_sent_anyway() -> None:
    huge = u("word " * 100_000)
    messages, trimmed = trim_history([u("old"), a("reply"), huge], 10, system=None)
    assert messages == [huge]
    assert trimmed == 2


def test_everything_fits() -> None:
    turns = [u("q1"), a("a1"), u("q2"), a("a2"), u("now")]
    messages, trimmed = trim_history(turns, 10_000, system="sys")
    assert messages == [{"role": "system", "content": "sys"}, *turns]
    assert trimmed == 0


def test_pairs_dropped_oldest_first() -> None:
    pairs = [(u(f"question {i} " * 5), a(f"answer {i} " * 5)) for i in range(5)]
    newest = u("now")
    turns = [m for pair in pairs for m in pair] + [newest]
    # Exactly enough for the newest message and the two most recent pairs.
    budget = cost(newest) + cost(*pairs[3]) + cost(*pairs[4])
    messages, trimmed = trim_history(turns, budget, system=None)
    assert messages == [*pairs[3], *pairs[4], newest]
    assert trimmed == 6
    # One token less: the older of the two pairs goes, as a whole pair.
    messages, trimmed = trim_history(turns, budget - 1, system=None)
    assert messages == [*pairs[4], newest]
    assert trimmed == 8


def test_system_prompt_counts_against_budget_and_stays_first() -> None:
    system = "s" * 400  # 100 tokens
    turns = [u("q1"), a("a1"), u("now")]
    sys_msg = {"role": "system", "content": system}
    room = cost(sys_msg) + cost(turns[2])
    messages, trimmed = trim_history(turns, room + cost(turns[0], turns[1]), system=system)
    assert messages == [sys_msg, *turns]
    assert trimmed == 0
    messages, trimmed = trim_history(turns, room, system=system)
    assert messages == [sys_msg, turns[2]]
    assert trimmed == 2


def test_no_system_prompt_when_none_or_empty() -> None:
    for system in (None, ""):
        messages, _ = trim_history([u("hi")], 100, system=system)
        assert messages == [u("hi")]


def test_never_starts_with_assistant_after_system() -> None:
    # Leading orphan answers (no question) are dropped even with room to spare.
    turns = [a("orphan"), a("orphan 2"), u("q1"), a("a1"), u("now")]
    messages, trimmed = trim_history(turns, 10_000, system="sys")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert trimmed == 2


def test_unanswered_question_is_its_own_exchange() -> None:
    # A question whose answer failed has no assistant message after it.
    turns = [u("q1"), a("a1"), u("failed q"), u("now")]
    budget = cost(turns[2], turns[3])
    messages, trimmed = trim_history(turns, budget, system=None)
    assert messages == [u("failed q"), u("now")]
    assert trimmed == 2


def test_multi_message_answer_dropped_with_its_question() -> None:
    turns = [u("q1"), a("part 1"), a("part 2"), u("q2"), a("a2"), u("now")]
    budget = cost(*turns[3:])
    messages, trimmed = trim_history(turns, budget + cost(turns[1], turns[2]), system=None)
    # Room for the answers but not the question too: the whole exchange goes.
    assert messages == turns[3:]
    assert trimmed == 3


def test_input_not_mutated_and_output_independent() -> None:
    turns = [u("q1"), a("a1"), u("now")]
    messages, _ = trim_history(turns, 10_000, system=None)
    messages[0]["content"] = "changed"
    assert turns[0]["content"] == "q1"


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        trim_history([], 100, system=None)
    with pytest.raises(ValueError):
        trim_history([u("q"), a("a")], 100, system=None)


def test_kept_history_is_contiguous() -> None:
    # The big recent exchange does not fit; the small older one would, but
    # skipping over the big one would leave a hole in the conversation.
    turns = [u("hi"), a("hello"), u("x " * 500), a("y " * 500), u("now")]
    budget = cost(turns[4]) + cost(turns[0], turns[1])
    messages, trimmed = trim_history(turns, budget, system=None)
    assert messages == [u("now")]
    assert trimmed == 4
