"""
chat_server.history_cache
~~~~~~~~~~~~~~~~~~~~~~~~~

The in-memory copy of the conversations users are having, so the model's
context does not have to be rebuilt from the whole stored history on every
message. The store stays the truth:

* **Refreshed, not trusted.** Each :meth:`ConversationCache.conversation` call
  asks the store only for the turns newer than the last one it holds (one
  indexed query), so turns saved by another replica, or by this server, show
  up. That one query gives both what a message needs: the history and the
  model of the newest turn (a turn's model may change from one turn to the
  next, on any replica).
* **Bounded by bytes**, not by a count of conversations: least recently used
  conversations go first when the total passes ``max_bytes``; a conversation
  bigger than the whole budget is served but not kept.
* **No more than the model can read.** With a context budget (the server's
  ``CHAT_CONTEXT_TOKENS``), a conversation is held, and read from the store,
  only as far back as the model's context can reach: the newest complete
  turns until their estimated tokens (:func:`chat_server.context.message_tokens`)
  pass the budget, read newest first in pages. Older turns could never be
  sent (``trim_history`` keeps a contiguous run of the newest exchanges that
  fit the budget, and the window holds one exchange more than fits, so
  whenever older turns exist the trim drops some and says so), so what the
  model gets is the same. A conversation of a million turns costs what one of
  a few dozen does.
* **Released with the session.** When a user's session ends, their
  conversations are dropped (:meth:`release`); the next message reloads them
  from the store. Idle users cost nothing here.

Only complete turns are part of a conversation's history (a cancelled,
failed or interrupted answer is stored but not sent back to the model).
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from .context import message_tokens
from .memory import give_back
from .store import Store, StoreError, TurnRecord, TurnStatus

__all__ = ["Conversation", "ConversationCache"]

log = logging.getLogger("chat_server.history_cache")

Message = dict[str, str]

#: Complete turns read per query when a conversation is read newest first:
#: the first page, doubling up to the last (a few big turns fill the budget).
_FIRST_PAGE = 8
_LAST_PAGE = 256

#: What an entry and a turn cost beyond their text (objects, slots), roughly.
ENTRY_OVERHEAD = 400
TURN_OVERHEAD = 120


def _turn_bytes(user_text: str, answer_text: str) -> int:
    return sys.getsizeof(user_text) + sys.getsizeof(answer_text) + TURN_OVERHEAD


class Conversation(NamedTuple):
    """A conversation as one refresh from the store saw it."""

    #: Its complete turns, oldest first, as user/assistant chat messages.
    messages: list[Message]
    #: The model of its newest stored turn, whatever that turn's status; None:
    #: no turn yet.
    model: str | None
    #: The id of its newest stored turn if that turn was interrupted before any
    #: answer text (the message a client sends again after a shutdown or a lost
    #: connection); None otherwise.
    unanswered: int | None = None


@dataclass
class _Entry:
    last_id: int = 0  # the newest stored turn this entry has seen
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user_text, answer_text)
    size: int = ENTRY_OVERHEAD
    model: str | None = None  # the model of the newest stored turn (any status)
    unanswered: int | None = None  # the newest turn's id, if interrupted with no answer


class ConversationCache:
    """Conversations as chat messages, per (user, conversation)."""

    def __init__(self, store: Store, max_bytes: int, *, context_tokens: int | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if context_tokens is not None and context_tokens < 0:
            raise ValueError("context_tokens must be >= 0")
        self._store = store
        self.max_bytes = max_bytes
        #: The model's context budget: older turns than it can reach are
        #: neither read nor held. None: whole conversations (no budget).
        self.context_tokens = context_tokens
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """What the cached conversations hold, by the cache's own accounting."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def conversation(self, user: str, conversation: str) -> Conversation:
        """The conversation's complete turns (with a context budget: only as
        far back as it reaches), the model of its newest turn and whether that
        turn went unanswered, from one refresh (queries for the turns newer
        than those held only). A store failure is logged; the caller gets what
        the cache has (nothing, if it had nothing)."""
        key = (user, conversation)
        entry = self._entries.get(key)
        try:
            if self.context_tokens is None:
                new = await self._store.turns(
                    user, conversation, after_id=None if entry is None else entry.last_id
                )
            else:
                new = await self._window(user, conversation, entry)
        except StoreError as exc:
            log.warning("could not load conversation history: %s", exc,
                        extra={"event": "store_error"})
            if entry is None:
                return Conversation([], None)
            return _conversation(entry)
        # Another call may have filled or refreshed the entry while we waited.
        entry = self._entries.get(key) or entry or _Entry()
        self._extend(key, entry, new)
        self._fit(key, entry)
        self._keep(key, entry)
        return _conversation(entry)

    def release(self, user: str) -> None:
        """A session of ``user`` ended: forget their conversations, and let the
        process give the memory they held back to the OS (without that, the
        freed texts stay in the heap: up to the whole budget after the last
        session of a busy hour ends)."""
        freed = 0
        for conversation in self._by_user.pop(user, ()):
            entry = self._entries.pop((user, conversation), None)
            if entry is not None:
                self._bytes -= entry.size
                freed += entry.size
        if freed:
            give_back(freed)

    # ------------------------------------------------------------------ internals
    async def _window(self, user: str, conversation: str,
                      entry: _Entry | None) -> list[TurnRecord]:
        """The turns newer than ``entry`` holds that a refresh needs, oldest
        first: the newest turn (any status: its model, whether it went
        unanswered) and, newest first in pages, the complete turns until they
        pass the context budget."""
        assert self.context_tokens is not None
        after = None if entry is None else entry.last_id
        newest = await self._store.turns(user, conversation, after_id=after,
                                         newest_first=True, limit=1)
        if not newest:
            return []
        picked: list[TurnRecord] = []
        tokens = 0
        # Up to that newest turn: one saved meanwhile waits for the next refresh.
        before = newest[0].id + 1 if newest[0].id is not None else None
        page = _FIRST_PAGE
        while tokens <= self.context_tokens:
            rows = await self._store.turns(user, conversation, after_id=after, before_id=before,
                                           status=TurnStatus.COMPLETE, newest_first=True,
                                           limit=page)
            for row in rows:
                picked.append(row)
                tokens += _turn_tokens(row.user_text, row.answer_text)
                if tokens > self.context_tokens:
                    break
            if len(rows) < page:
                break
            before = rows[-1].id
            page = min(page * 2, _LAST_PAGE)
        if newest[0].status != TurnStatus.COMPLETE:
            picked.insert(0, newest[0])
        picked.reverse()
        return picked

    def _fit(self, key: tuple[str, str], entry: _Entry) -> None:
        """Drop the oldest held turns the model's context can no longer reach:
        keep the shortest run of newest turns whose tokens pass the budget."""
        if self.context_tokens is None:
            return
        tokens = 0
        keep = 0
        for user_text, answer_text in reversed(entry.turns):
            keep += 1
            tokens += _turn_tokens(user_text, answer_text)
            if tokens > self.context_tokens:
                break
        dropped = entry.turns[:len(entry.turns) - keep]
        if not dropped:
            return
        del entry.turns[:len(dropped)]
        freed = sum(_turn_bytes(u, a) for u, a in dropped)
        entry.size -= freed
        if self._entries.get(key) is entry:
            self._bytes -= freed

    def _extend(self, key: tuple[str, str], entry: _Entry, turns: list[TurnRecord]) -> None:
        for turn in turns:
            assert turn.id is not None
            if turn.id <= entry.last_id:
                continue  # already added by a concurrent refresh
            entry.last_id = turn.id
            entry.model = turn.model
            entry.unanswered = (turn.id if turn.status is TurnStatus.INTERRUPTED
                                and not turn.answer_text else None)
            if turn.status is TurnStatus.COMPLETE:
                entry.turns.append((turn.user_text, turn.answer_text))
                grown = _turn_bytes(turn.user_text, turn.answer_text)
                entry.size += grown
                if self._entries.get(key) is entry:
                    self._bytes += grown

    def _keep(self, key: tuple[str, str], entry: _Entry) -> None:
        user, conversation = key
        if self._entries.get(key) is not entry:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            self._by_user.setdefault(user, set()).add(conversation)
        self._entries.move_to_end(key)
        # Least recently used first; a conversation larger than the whole
        # budget evicts itself last of all.
        while self._bytes > self.max_bytes and self._entries:
            (old_user, old_conv), old_entry = self._entries.popitem(last=False)
            self._bytes -= old_entry.size
            convs = self._by_user.get(old_user)
            if convs is not None:
                convs.discard(old_conv)
                if not convs:
                    del self._by_user[old_user]


def _turn_tokens(user_text: str, answer_text: str) -> int:
    return (message_tokens({"role": "user", "content": user_text})
            + message_tokens({"role": "assistant", "content": answer_text}))


def _conversation(entry: _Entry) -> Conversation:
    return Conversation(_messages(entry), entry.model, entry.unanswered)


def _messages(entry: _Entry) -> list[Message]:
    out: list[Message] = []
    for user_text, answer_text in entry.turns:
        out.append({"role": "user", "content": user_text})
        out.append({"role": "assistant", "content": answer_text})
    return out
