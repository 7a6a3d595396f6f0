"""Fit a conversation into the model's context budget.

The model sees the whole conversation on every turn, so a long chat has to
be cut. ``trim_history`` keeps the system prompt, always the new user
message, and as many of the most recent earlier exchanges as fit; it drops
whole exchanges (a user message with the assistant answer(s) after it) from
the oldest, so the model never sees an answer without its question.

Token counts are estimates: we do not ship the model's tokenizer. The rule,
``max(ceil(chars / 4), words)``, matches the usual ~4 characters per token
of English text and never counts fewer than one token per word, which keeps
short-word and non-Latin text from being underestimated too badly. Each
message also costs ``MESSAGE_OVERHEAD`` tokens for the role markers the chat
template wraps around it. Leave headroom in the budget for the estimate's
error and for the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MESSAGE_OVERHEAD", "estimate_tokens", "message_tokens", "trim_history"]

# Role/turn markers a chat template adds per message (e.g. "<|im_start|>user\n ... <|im_end|>").
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Cheap token estimate: ``max(ceil(len(text) / 4), word count)``; 0 for ""."""
    by_chars = -(-len(text) // 4)
    by_words = len(text.split())
    return max(by_chars, by_words)


def message_tokens(message: dict[str, str]) -> int:
    """Estimated cost of one chat message, template overhead included."""
    return estimate_tokens(message.get("content", "")) + MESSAGE_OVERHEAD


def trim_history(
    turns: Sequence[dict[str, str]],
    budget_tokens: int,
    *,
    system: str | None = None,
) -> tuple[list[dict[str, str]], int]:
    """Return ``(messages, trimmed)`` ready for the model's chat endpoint.

    ``turns`` are ollama chat messages, oldest first, the last one being the
    new user message. ``messages`` is ``[system?] + kept earlier turns + new
    message``; ``trimmed`` is how many messages of ``turns`` were left out.
    The system prompt and the new message are always sent, even when they
    alone exceed the budget (the model then truncates or fails, and says so).
    """
    if not turns:
        raise ValueError("trim_history needs at least the new user message")
    newest = turns[-1]
    if newest.get("role") != "user":
        raise ValueError(f"the last message must be the user's, got role {newest.get('role')!r}")

    head: list[dict[str, str]] = []
    if system:
        head.append({"role": "system", "content": system})
    remaining = max(budget_tokens, 0)
    remaining -= sum(message_tokens(m) for m in head) + message_tokens(newest)

    # Split the earlier turns into exchanges, each starting at a user message.
    # Assistant messages before the first user message have no question; they
    # would be first after the system prompt, so they are never kept.
    earlier = turns[:-1]
    exchanges: list[Sequence[dict[str, str]]] = []
    start: int | None = None
    for index, message in enumerate(earlier):
        if message.get("role") == "user":
            if start is not None:
                exchanges.append(earlier[start:index])
            start = index
    if start is not None:
        exchanges.append(earlier[start:])

    # Newest exchanges first; stop at the first that does not fit so the
    # kept history stays contiguous.
    kept: list[Sequence[dict[str, str]]] = []
    for exchange in reversed(exchanges):
        cost = sum(message_tokens(m) for m in exchange)
        if cost > remaining:
            break
        remaining -= cost
        kept.append(exchange)
    kept.reverse()

    messages = head + [dict(m) for exchange in kept for m in exchange] + [dict(newest)]
    trimmed = len(turns) + len(head) - len(messages)
    return messages, trimmed
