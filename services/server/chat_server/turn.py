"""
chat_server.turn
~~~~~~~~~~~~~~~~

One chat turn: a user's message in, an answer out. The order of the steps is
the policy of the service:

1. moderation of the user's text (banned words, then personal data): a refused
   message is never sent to the model and never stored;
2. the model must be ready (a missing model is being pulled);
3. the conversation so far, trimmed to the context budget (the user is told);
4. a fair slot among all users (the user is told their place in line);
5. the answer streams out as it is generated, through the answer filter that
   masks personal data and banned words, also across token boundaries;
6. the turn is stored (SQLite, WAL) *before* the end-of-answer frame, so an
   acknowledged answer is never lost; a cancelled, failed or interrupted
   turn is stored too, with what was said so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatcore.privacy import refusal_notice
from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    ChatMessage,
    Error,
    ErrorCode,
    Event,
    LocalProtocolError,
    Notice,
    NoticeKind,
    State,
)

from .coalesce import coalesce
from .context import trim_history
from .model import ModelChunk, ModelError, ModelUnavailable
from .moderation.answer_filter import AnswerFilter
from .moderation.banned_words import WatchedBannedWords as BannedWordsLike
from .store import Turn as StoredTurn
from .wire import PeerGone

if TYPE_CHECKING:
    from .session import Session

CUSS_WARNING = "[WARNING] use of cuss words are not allowed"
#: Messages up to this size are moderated inline (microseconds); longer ones in a thread.
MODERATE_INLINE_CHARS = 2048


def _moderate(banned: BannedWordsLike, text: str) -> tuple[bool, str | None]:
    """(contains a banned word, personal-data refusal notice or None)."""
    return banned.contains(text), refusal_notice(text)


def _now() -> datetime:
    return datetime.now(UTC)


class Turn:
    def __init__(self, session: Session, message: ChatMessage) -> None:
        self.session = session
        self.service = session.service
        self.message = message
        self.id = message.message_id
        self.conversation = message.conversation or session.default_conversation
        self.received = time.monotonic()
        self.created_at = _now()
        self.answer: list[str] = []
        self.first_token_ms = 0
        self._task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None

    # ------------------------------------------------------------------ control
    def cancel(self, reason: str) -> None:
        """Stop the answer (v2 CANCEL, disconnect, shutdown deadline)."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _send(self, event: Event) -> None:
        await self.session.send(event)

    # ------------------------------------------------------------------ pipeline
    async def run(self) -> bool:
        """Returns False when the protocol requires the connection to close."""
        s = self.session
        text = self.message.text
        svc = self.service
        user = s.user
        assert user is not None

        # 1. moderation of the user's message (server-side, for every client).
        # Long messages are checked off the event loop: on adversarial 64 KiB
        # input the detectors take a noticeable fraction of a second.
        if len(text) > MODERATE_INLINE_CHARS:
            banned, notice = await asyncio.to_thread(_moderate, svc.banned, text)
        else:
            banned, notice = _moderate(svc.banned, text)
        if banned:
            s.log(logging.WARNING, "message refused: banned word", event="moderation",
                  message_id=self.id, rule="banned_word")
            await self._send(Notice(NoticeKind.MODERATION, CUSS_WARNING, self.id))
            if s.conn.state is State.CLOSED:  # v1: warning + <GoodBye> + close
                return False
            await self._send(Error(ErrorCode.REFUSED, "message refused: use of cuss words is not allowed", self.id))
            return True
        if notice is not None:
            s.log(logging.WARNING, "message refused: personal data", event="moderation",
                  message_id=self.id, rule="personal_data")
            await self._send(Notice(NoticeKind.PRIVACY, notice, self.id))
            await self._send(Error(ErrorCode.REFUSED, notice, self.id))
            return True

        # 2. the model must be ready
        model = svc.model
        # While the model is being pulled (or the first check is running) say so;
        # when it was merely unreachable, the request itself is the best probe.
        if model.state in ("starting", "pulling"):
            detail = (model.state_detail or "The model is not ready yet.").rstrip(". ")
            await self._send(Notice(NoticeKind.MODEL_LOADING, f"{detail}.", self.id))
            await self._send(Error(ErrorCode.MODEL_LOADING, f"{detail}; try again in a moment.", self.id))
            return True

        # 3 to 6 run in a task of their own so that CANCEL can stop them.
        if svc.answering(user):
            await self._send(Notice(
                NoticeKind.QUEUE, "waiting for your answer in another session to finish", self.id,
            ))
        async with svc.user_answering(user):
            self._task = asyncio.create_task(self._answer(user), name=f"turn-{s.id}-{self.id}")
            if self._cancel_reason is not None:  # cancelled while waiting for the lock
                self._task.cancel()
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                # The session itself is being cancelled: stop the answer too,
                # and let it store what it has before we go.
                self.cancel("connection closed")
                with contextlib.suppress(BaseException):
                    await self._task
                raise
        return True

    async def _answer(self, user: str) -> None:
        s = self.session
        svc = self.service
        settings = svc.settings
        status = "error"
        end: AnswerEnd | None = None
        error: Error | None = None
        prompt_tokens = answer_tokens = 0
        filt = AnswerFilter(svc.banned)
        try:
            # 3. conversation context
            history = await svc.conversation(user, self.conversation)
            messages, trimmed = trim_history(
                [*history, {"role": "user", "content": self.message.text}],
                settings.context_tokens,
                system=settings.system_prompt or None,
            )
            if trimmed:
                await self._send(Notice(
                    NoticeKind.CONTEXT_TRIMMED,
                    f"{trimmed} earlier messages were left out of the model's context to fit its budget",
                    self.id,
                ))

            # 4. a fair slot
            async def on_position(position: int) -> None:
                with contextlib.suppress(PeerGone, LocalProtocolError):
                    await self._send(Notice(
                        NoticeKind.QUEUE, f"waiting for the model: position {position} in line",
                        self.id, position=position,
                    ))

            async def generation() -> AsyncGenerator[ModelChunk, None]:
                # The slot is held by the generation, not by the writes to the
                # client: a client that reads slowly holds up only itself, and
                # the next user's generation starts as soon as the model is done.
                async with svc.scheduler.slot(user, on_position=on_position):
                    # Debug only: the info-level record of a turn is its one
                    # turn_end line (logging is a measurable share of CPU).
                    s.log(logging.DEBUG, "generation started", event="model_start",
                          message_id=self.id, context_messages=len(messages))
                    async with contextlib.aclosing(svc.model.chat(messages)) as stream:
                        async for chunk in stream:
                            yield chunk

            # 5. stream the answer
            done_reason = "stop"
            async with contextlib.aclosing(coalesce(generation())) as batches:
                async for batch in batches:
                    for chunk in batch:
                        if chunk.done:
                            done_reason = chunk.done_reason or "stop"
                            prompt_tokens = chunk.prompt_tokens or 0
                            answer_tokens = chunk.answer_tokens or 0
                    # Tokens that arrived together go out together.
                    await self._emit(filt.feed("".join(c.text for c in batch)))
            await self._emit(filt.finish())
            if filt.masked:
                await self._send(Notice(
                    NoticeKind.ANSWER_MASKED,
                    "personal data or banned words were masked in this answer", self.id,
                ))
            status = "complete"
            end = AnswerEnd(
                self.id, reason=done_reason, prompt_tokens=prompt_tokens,
                answer_tokens=answer_tokens, first_token_ms=self.first_token_ms,
                total_ms=self._elapsed_ms(),
            )
        except asyncio.CancelledError:
            reason = self._cancel_reason or "cancelled"
            status = "cancelled" if "user" in reason else "interrupted"
            s.log(logging.INFO, "answer stopped: %s", reason, event="model_cancel", message_id=self.id)
            with contextlib.suppress(BaseException):
                await self._emit(filt.finish())
            end = AnswerEnd(
                self.id, reason="cancelled", answer_tokens=answer_tokens,
                first_token_ms=self.first_token_ms, total_ms=self._elapsed_ms(),
            )
        except ModelError as exc:
            code = ErrorCode.MODEL_UNAVAILABLE if isinstance(exc, ModelUnavailable) else ErrorCode.MODEL_ERROR
            s.log(logging.WARNING, "model error: %s", exc.detail, event="model_error",
                  message_id=self.id, code=code.value)
            error = Error(code, str(exc), self.id)
            # What the model said before failing is still the user's to see.
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._emit(filt.finish())
        except PeerGone:
            status = "interrupted"
        # 6. store, then acknowledge
        await self._store(user, status, prompt_tokens, answer_tokens)
        final = error or end
        if final is not None:
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._send(final)
        s.log(logging.INFO, "turn finished: %s", status, event="turn_end", message_id=self.id,
              model=svc.settings.ollama_model, prompt_tokens=prompt_tokens,
              answer_tokens=answer_tokens, first_token_ms=self.first_token_ms,
              total_ms=self._elapsed_ms())

    async def _emit(self, text: str) -> None:
        if not text:
            return
        if not self.answer:
            self.first_token_ms = self._elapsed_ms()
        self.answer.append(text)
        await self._send(AnswerDelta(text, self.id))

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self.received) * 1000)

    async def _store(self, user: str, status: str, prompt_tokens: int, answer_tokens: int) -> None:
        svc = self.service
        answer = "".join(self.answer)
        turn = StoredTurn(
            user=user,
            conversation=self.conversation,
            created_at=self.created_at,
            completed_at=_now(),
            model=svc.settings.ollama_model,
            user_text=self.message.text,
            answer_text=answer,
            prompt_tokens=prompt_tokens,
            answer_tokens=answer_tokens,
            status=status,
        )
        ok = await svc.save_turn(turn)
        if not ok:
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._send(Notice(
                    NoticeKind.INFO,
                    "this turn could not be saved to the history (storage error); the server keeps serving",
                    self.id,
                ))
