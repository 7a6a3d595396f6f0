"""ConversationCache: history from the store, refreshed per call, bounded by
bytes, dropped with the session. Runs on both engines (a real store)."""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from chat_server import memory
from chat_server.context import trim_history
from chat_server.history_cache import ENTRY_OVERHEAD, TURN_OVERHEAD, ConversationCache
from chat_server.store import Store, TurnRecord, TurnStatus, open_store

pytestmark = pytest.mark.anyio

KB = 1024


def turn(user: str, conversation: str, text: str, answer: str | None = None,
         status: TurnStatus = TurnStatus.COMPLETE, model: str = "m") -> TurnRecord:
    now = datetime.now(UTC)
    return TurnRecord(user, conversation, now, now, model, text,
                      answer if answer is not None else f"re: {text}", status=status)


def size(text: str) -> int:
    # A fresh copy, as the store returns it: a string that has been handed to
    # a database driver also carries a cached UTF-8 copy, which getsizeof counts.
    return sys.getsizeof(text.encode("utf-8").decode("utf-8"))


def cost(*pairs: tuple[str, str]) -> int:
    return ENTRY_OVERHEAD + sum(size(u) + size(a) + TURN_OVERHEAD for u, a in pairs)


@pytest.fixture
async def users(store: Store) -> Store:
    for name in ("alice", "bob"):
        await store.add_user(name, "h")
    return store


async def test_history_is_the_complete_turns_in_order(users: Store) -> None:
    store = users
    await store.save_turn(turn("alice", "c", "one"))
    await store.save_turn(turn("alice", "c", "cancelled", status=TurnStatus.CANCELLED))
    await store.save_turn(turn("alice", "c", "two"))
    await store.save_turn(turn("alice", "other", "elsewhere"))
    cache = ConversationCache(store, 10 * 1024 * KB)
    assert (await cache.conversation("alice", "c")).messages == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "re: one"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "re: two"},
    ]
    assert (await cache.conversation("alice", "new")).messages == []
    assert (await cache.conversation("bob", "c")).messages == []


async def test_turns_saved_later_or_elsewhere_are_picked_up(users: Store, store_target: str) -> None:
    cache = ConversationCache(users, 10 * 1024 * KB)
    await users.save_turn(turn("alice", "c", "one"))
    assert len((await cache.conversation("alice", "c")).messages) == 2
    # Another replica (its own store) answers the next message of the conversation.
    async with await open_store(store_target) as replica:
        await replica.save_turn(turn("alice", "c", "two"))
    await users.save_turn(turn("alice", "c", "three"))
    texts = [m["content"] for m in (await cache.conversation("alice", "c")).messages if m["role"] == "user"]
    assert texts == ["one", "two", "three"]
    # Asking again adds nothing twice.
    assert len((await cache.conversation("alice", "c")).messages) == 6


async def test_one_refresh_gives_the_history_and_the_newest_turns_model(
        users: Store, store_target: str) -> None:
    """A message reads its conversation once (chat_server.turn): the model must
    come with the history, and follow the newest turn wherever it was saved."""
    cache = ConversationCache(users, 10 * 1024 * KB)
    assert await cache.conversation("alice", "c") == ([], None, None)
    await users.save_turn(turn("alice", "c", "one", model="small"))
    messages, model, _ = await cache.conversation("alice", "c")
    assert (len(messages), model) == (2, "small")
    # Another replica goes on with another model; this cache holds "small".
    async with await open_store(store_target) as replica:
        await replica.save_turn(turn("alice", "c", "two", model="big"))
    messages, model, _ = await cache.conversation("alice", "c")
    assert [m["content"] for m in messages if m["role"] == "user"] == ["one", "two"]
    assert model == "big"
    # A turn that did not complete is not history, but it did change the model.
    await users.save_turn(turn("alice", "c", "stopped", status=TurnStatus.CANCELLED,
                               model="small"))
    messages, model, _ = await cache.conversation("alice", "c")
    assert (len(messages), model) == (4, "small")
    # Other conversations and users have their own.
    assert await cache.conversation("alice", "other") == ([], None, None)
    assert await cache.conversation("bob", "c") == ([], None, None)


async def test_the_newest_turn_is_reported_unanswered_only_if_interrupted_before_any_text(
        users: Store, store_target: str) -> None:
    """What lets a question asked again replace its unanswered attempt
    (chat_server.turn): the id of the newest turn, when that turn was cut off
    before any answer text; no other turn is ever named."""
    cache = ConversationCache(users, 10 * 1024 * KB)
    await users.save_turn(turn("alice", "c", "one"))
    assert (await cache.conversation("alice", "c")).unanswered is None
    cut = await users.save_turn(turn("alice", "c", "two", answer="", status=TurnStatus.INTERRUPTED))
    assert (await cache.conversation("alice", "c")).unanswered == cut
    # Also when another replica saved it, and in a fresh cache.
    assert (await ConversationCache(users, KB * KB).conversation("alice", "c")).unanswered == cut
    assert (await cache.conversation("alice", "other")).unanswered is None
    # Answered (even partly), cancelled or failed: not an unanswered attempt.
    for later in (turn("alice", "c", "three", answer="half", status=TurnStatus.INTERRUPTED),
                  turn("alice", "c", "four", answer="", status=TurnStatus.CANCELLED),
                  turn("alice", "c", "five", answer="", status=TurnStatus.ERROR),
                  turn("alice", "c", "six")):
        async with await open_store(store_target) as replica:
            await replica.save_turn(later)
        assert (await cache.conversation("alice", "c")).unanswered is None, later


async def test_a_conversation_not_kept_still_has_its_model(users: Store) -> None:
    """Larger than the budget (or the cache off, CHAT_HISTORY_CACHE_MB=0): the
    conversation is served but not kept, and its model is still its own."""
    for budget in (0, 50 * KB):
        cache = ConversationCache(users, budget)
        await users.save_turn(turn("alice", f"huge{budget}", "h" * (60 * KB), model="small"))
        messages, model, _ = await cache.conversation("alice", f"huge{budget}")
        assert (len(messages), model) == (2, "small")
        assert len(cache) == 0


async def test_byte_accounting(users: Store) -> None:
    cache = ConversationCache(users, 10 * 1024 * KB)
    big = "x" * (60 * KB)
    await users.save_turn(turn("alice", "c1", big, "y" * (30 * KB)))
    await users.save_turn(turn("alice", "c1", "short", "é" * 100))
    await users.save_turn(turn("bob", "c2", "🙂" * 1000, "ok"))
    await cache.conversation("alice", "c1")
    await cache.conversation("bob", "c2")
    expected = cost((big, "y" * (30 * KB)), ("short", "é" * 100)) + cost(("🙂" * 1000, "ok"))
    assert cache.bytes == expected
    assert cache.bytes >= 60 * KB + 30 * KB + 4 * 1000  # text counted as Python holds it
    # A refresh that finds a new turn grows the figure by exactly that turn.
    await users.save_turn(turn("bob", "c2", "more", "and more"))
    await cache.conversation("bob", "c2")
    assert cache.bytes == expected + size("more") + size("and more") + TURN_OVERHEAD


async def test_release_drops_the_users_conversations(users: Store) -> None:
    cache = ConversationCache(users, 10 * 1024 * KB)
    for conv in ("c1", "c2"):
        await users.save_turn(turn("alice", conv, "x" * (60 * KB)))
    await users.save_turn(turn("bob", "c1", "hi"))
    for conv in ("c1", "c2"):
        await cache.conversation("alice", conv)
    await cache.conversation("bob", "c1")
    bob_bytes = cost(("hi", "re: hi"))
    cache.release("alice")
    assert len(cache) == 1 and ("bob", "c1") in cache
    assert cache.bytes == bob_bytes
    cache.release("alice")  # nothing left: fine
    cache.release("bob")
    assert (len(cache), cache.bytes) == (0, 0)
    # The store still has everything: the next message reloads it.
    assert len((await cache.conversation("alice", "c1")).messages) == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="giving back is glibc's malloc_trim")
async def test_released_conversations_are_given_back_to_the_os(users: Store) -> None:
    """Forgetting a session's conversations is not enough: the freed texts
    would stay in the process's heap (a busy hour's worth, after its sessions
    ended). Releasing them reports the bytes to the allocation policy, which
    returns the free heap pages (chat_server.memory.give_back)."""
    cache = ConversationCache(users, 10 * 1024 * KB)
    for n in range(6):  # 360 KiB: past memory.TRIM_AFTER_BYTES
        await users.save_turn(turn("alice", f"c{n}", "x" * (60 * KB)))
        await cache.conversation("alice", f"c{n}")
    before = memory.trims()
    cache.release("alice")
    await asyncio.sleep(memory.TRIM_DELAY + 0.5)
    assert memory.trims() > before


async def test_least_recently_used_conversations_are_evicted_by_bytes(users: Store) -> None:
    text = "x" * (60 * KB)
    one = cost((text, f"re: {text}"))
    cache = ConversationCache(users, int(2.5 * one))
    for conv in ("a", "b", "c"):
        await users.save_turn(turn("alice", conv, text))
    await cache.conversation("alice", "a")
    await cache.conversation("alice", "b")
    await cache.conversation("alice", "a")  # a is now more recent than b
    await cache.conversation("alice", "c")  # over budget: b goes
    assert ("alice", "a") in cache and ("alice", "c") in cache and ("alice", "b") not in cache
    assert cache.bytes == 2 * one <= cache.max_bytes
    # Evicted conversations come back from the store intact.
    assert ((await cache.conversation("alice", "b")).messages)[0]["content"] == text
    assert cache.bytes <= cache.max_bytes


async def test_many_conversations_never_exceed_the_budget(users: Store) -> None:
    cache = ConversationCache(users, 500 * KB)
    for i in range(40):
        await users.save_turn(turn("alice", f"c{i}", "z" * (20 * KB + i)))
        await cache.conversation("alice", f"c{i}")
        assert cache.bytes <= cache.max_bytes
    assert cache.bytes == sum(
        cost((f"{'z' * (20 * KB + i)}", f"re: {'z' * (20 * KB + i)}"))
        for i in range(40) if ("alice", f"c{i}") in cache)


async def test_conversation_bigger_than_the_budget_is_served_not_kept(users: Store) -> None:
    cache = ConversationCache(users, 50 * KB)
    await users.save_turn(turn("alice", "huge", "h" * (60 * KB)))
    history = (await cache.conversation("alice", "huge")).messages
    assert history[0]["content"] == "h" * (60 * KB)
    assert (len(cache), cache.bytes) == (0, 0)


async def test_concurrent_calls_add_each_turn_once(users: Store) -> None:
    cache = ConversationCache(users, 10 * 1024 * KB)
    for i in range(5):
        await users.save_turn(turn("alice", "c", f"m{i}"))
    results = await asyncio.gather(*(cache.conversation("alice", "c") for _ in range(8)))
    for r in results:
        assert len(r.messages) == 10
    assert len((await cache.conversation("alice", "c")).messages) == 10
    assert cache.bytes == cost(*((f"m{i}", f"re: m{i}") for i in range(5)))


async def test_store_failure_serves_what_the_cache_has(
    users: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ConversationCache(users, 10 * 1024 * KB)
    await users.save_turn(turn("alice", "c", "kept"))
    assert len((await cache.conversation("alice", "c")).messages) == 2
    await users.close()  # every store call now fails
    with caplog.at_level(logging.WARNING, logger="chat_server.history_cache"):
        assert len((await cache.conversation("alice", "c")).messages) == 2
        assert (await cache.conversation("alice", "unknown")).messages == []
        assert (await cache.conversation("alice", "c")).model == "m"
    assert "could not load conversation history" in caplog.text


# ------------------------------------------------------------ the context budget
def _trimmed(history: list[dict[str, str]], budget: int, system: str | None) -> tuple[Any, bool]:
    """What the model is sent, and whether the user is told that some of the
    conversation was left out (the count is only of what was read)."""
    messages, trimmed = trim_history([*history, {"role": "user", "content": "next question"}],
                                     budget, system=system)
    return messages, trimmed > 0


async def test_a_long_conversation_is_read_and_held_only_as_far_as_the_context_reaches(
        users: Store) -> None:
    """One user's conversation of hundreds of turns (or of a few huge ones)
    must not make every message of theirs read and hold all of it: only the
    newest turns the model's context can reach, whatever the conversation's
    length, and the model gets exactly what the whole history would give it."""
    sizes = [37, 400, 2000, 9000, 120, 5, 700] * 30  # 210 turns, 2.6 MB of text
    for n, chars in enumerate(sizes):
        await users.save_turn(turn("alice", "long", f"q{n} " + "w" * chars))
        if n % 50 == 7:  # not history: cancelled, failed
            await users.save_turn(turn("alice", "long", f"x{n}", status=TurnStatus.CANCELLED))
    whole = (await ConversationCache(users, 100 * 1024 * KB).conversation("alice", "long")).messages
    assert len(whole) == 2 * len(sizes)
    for budget in (0, 1, 50, 1000, 3000, 10_000):
        cache = ConversationCache(users, 100 * 1024 * KB, context_tokens=budget)
        found = await cache.conversation("alice", "long")
        assert found.model == "m" and found.unanswered is None
        # The newest turns, in order, as few as pass the budget.
        assert found.messages == whole[-len(found.messages):]
        assert len(found.messages) <= 2 * (budget // 20 + 1)
        # Held: the window, not the conversation (2.6 MB).
        assert cache.bytes <= cost(*[(m["content"], "") for m in found.messages]) + 4 * KB * len(found.messages)
        assert cache.bytes < 200 * KB
        for system in (None, "be brief"):
            assert _trimmed(found.messages, budget, system) == _trimmed(whole, budget, system)


async def test_a_conversation_growing_turn_by_turn_keeps_its_window(users: Store) -> None:
    """Refreshed after each new turn (a session chatting on): the window
    follows the newest turns and the old ones are let go; what the model gets
    is always what the whole history would give it."""
    budget = 600
    cache = ConversationCache(users, 100 * 1024 * KB, context_tokens=budget)
    reference = ConversationCache(users, 100 * 1024 * KB)
    peak = 0
    for n in range(120):
        await users.save_turn(turn("alice", "c", f"turn {n} " + "y" * (50 + 97 * (n % 11))))
        found = await cache.conversation("alice", "c")
        whole = (await reference.conversation("alice", "c")).messages
        assert found.messages == whole[-len(found.messages):]
        assert _trimmed(found.messages, budget, None) == _trimmed(whole, budget, None)
        peak = max(peak, cache.bytes)
    assert peak < 20 * KB < reference.bytes


async def test_the_window_still_reports_the_newest_turns_model_and_unanswered_attempt(
        users: Store, store_target: str) -> None:
    cache = ConversationCache(users, 100 * 1024 * KB, context_tokens=100)
    for n in range(40):
        await users.save_turn(turn("alice", "c", f"{n} " + "v" * 300, model="big"))
    assert (await cache.conversation("alice", "c")).model == "big"
    async with await open_store(store_target) as replica:
        cut = await replica.save_turn(turn("alice", "c", "again", answer="",
                                           status=TurnStatus.INTERRUPTED, model="small"))
    found = await cache.conversation("alice", "c")
    assert (found.model, found.unanswered) == ("small", cut)
    assert all(m["content"] != "again" for m in found.messages)  # not history
    fresh = await ConversationCache(users, KB * KB, context_tokens=100).conversation("alice", "c")
    assert fresh == found
    # A conversation of nothing but unfinished turns: its model, no history.
    for n in range(30):
        await users.save_turn(turn("alice", "cut", f"{n}", status=TurnStatus.ERROR, model="x"))
    assert await cache.conversation("alice", "cut") == ([], "x", None)
    assert await cache.conversation("alice", "none") == ([], None, None)
