"""
chat_server.turn
~~~~~~~~~~~~~~~~

One chat turn: a user's message in, an answer out. The order of the steps is
the policy of the service:

1. moderation of the user's text (banned words, then personal data): a refused
   message is never sent to the model and never stored;
2. a model the message names must be offered;
3. the user's other answers (in other sessions) come first: one answer per
   user at a time, so a conversation's turns stay in order (the user is told
   their place in line);
4. the conversation so far and its model, in one read of the store (the
   model the message names, else the one its newest turn had, on whichever
   replica); the model must be ready (a missing model is being pulled); the
   history is trimmed to the context budget (the user is told);
5. a fair slot among all users (the user is told their place in line);
6. the answer streams out as it is generated, through the answer filter that
   masks personal data and banned words, also across token boundaries;
7. the turn is stored *before* the end-of-answer frame, so an acknowledged
   answer is never lost; a cancelled, failed or interrupted turn is stored
   too, with what was said so far.

A turn sees the rest of the server only through its :class:`TurnContext`: who
is asking, how to send and log, and the few service operations of
:class:`TurnServices`. It never sees the session, the codec or the socket.

A turn can be stopped at any point with :meth:`ChatTurn.stop` and a
:class:`StopReason`: a CANCEL that arrives before the answer started (in the
same TCP read as the CHAT, during moderation, while waiting in line or for a
slot) cancels it all the same (docs/PROTOCOL.md §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    ChatMessage,
    EndReason,
    Error,
    ErrorCode,
    Event,
    LocalProtocolError,
    Notice,
    NoticeKind,
)

from . import metrics
from .backends import ModelChunk, ModelError, ModelUnavailable
from .coalesce import ANSWER_BUFFER_LIMIT, PAUSE_BUDGET, BufferStats, ConsumerTooSlow, coalesce
from .context import trim_history
from .history_cache import Conversation
from .logs import SessionLogger
from .memory import give_back
from .metrics import Outcome, Reason
from .moderation.worker import SteppedAnswerFilter
from .scheduler import PositionCallback, SchedulerClosed
from .stop import StopReason
from .store import TurnRecord as StoredTurn
from .store import TurnStatus
from .wire import PeerGone

__all__ = [
    "ChatTurn",
    "Message",
    "Refusal",
    "TurnContext",
    "TurnServices",
]

#: A batch of the answer is filtered in slices of this many characters, with the
#: event loop free between them: no single answer holds up the other sessions.
FILTER_SLICE_CHARS = 128
#: ... and once its steps run in the moderation worker (they do not hold the
#: loop), in slices of this many: fewer round trips to the worker.
REMOTE_SLICE_CHARS = 2048
#: What a message cut short by a shutdown before its answer began is told.
RESTARTING = "the server is restarting; try again shortly"
#: One chat message as the model sees it: ``{"role": ..., "content": ...}``.
Message = dict[str, str]
Send = Callable[[Event], Awaitable[None]]
#: What a client too slow to read its answer is told as the answer stops.
SLOW_READER_NOTICE = (
    "the answer was stopped early: this connection read it more slowly than the model "
    "wrote it, and the model is shared"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Moderation's verdict on a message it refuses."""

    #: ``MODERATION`` (banned words) or ``PRIVACY`` (personal data).
    kind: NoticeKind
    #: The sentence for the user: the NOTICE's and the ERROR's message.
    message: str
    #: Which rule refused it: ``Reason.BANNED_WORD`` or ``Reason.PERSONAL_DATA``.
    rule: Reason


class TurnServices(Protocol):
    """The service operations a turn needs (implemented by ``ChatService``)."""

    @property
    def context_tokens(self) -> int: ...

    @property
    def system_prompt(self) -> str | None: ...

    async def moderate(self, text: str) -> Refusal | None:
        """None if the message may go to the model."""

    def resolve_model(self, name: str) -> str | None:
        """The offered model ``name`` refers to; None if it is not offered."""

    def model_loading(self, model: str) -> str | None:
        """A sentence for the user while the model is being pulled or
        loaded; None when a request should simply be tried."""

    def user_turn(
        self, user: str, on_position: PositionCallback
    ) -> AbstractAsyncContextManager[None]:
        """Hold the user's one answer at a time (waiting in line, told the place)."""

    async def conversation(self, user: str, conversation: str) -> Conversation:
        """The conversation so far, from one read of the store: its completed
        turns as chat messages, the model it goes on with (its newest turn's,
        while that is offered; else the default: never None), and its newest
        turn's id if that turn went unanswered."""

    async def save(self, turn: StoredTurn, *, supersedes: int | None = None) -> bool:
        """Store a turn (replacing ``supersedes`` if that was the same question,
        unanswered: see ``Store.save_turn``); False (logged) if storage failed."""

    def generate(
        self, user: str, model: str, messages: list[Message], on_position: PositionCallback
    ) -> AsyncGenerator[ModelChunk, None]:
        """A fair scheduler slot on a backend serving ``model``, then its answer
        stream; chunks say which backend answered (closing the generator aborts
        the model request and frees the slot). Raises ``SchedulerClosed`` when
        the server is shutting down, ``ModelError`` when no backend can answer."""

    def answer_filter(self, to_client_text: Callable[[str], str] | None = None) -> SteppedAnswerFilter:
        """A fresh streaming masker for one answer, masking the text in the
        form the client receives it (``to_client_text``: v1's transliteration);
        its costly steps run in the moderation worker."""


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Everything a turn may use: who asks, how to talk and log, the services."""

    user: str
    #: The conversation of a message that names none (one per connection).
    default_conversation: str
    #: Send an event to the client; raises ``PeerGone`` once it is gone.
    send: Send
    log: SessionLogger
    services: TurnServices
    #: How the answer's text is converted for this client (v1: to ASCII); None: as is.
    to_client_text: Callable[[str], str] | None = None


#: The ERROR for a CHAT naming a model the server does not offer (it never
#: echoes what the client sent).
UNKNOWN_MODEL = "that model is not offered here; HELLO lists the models"


def _chunk_chars(chunk: ModelChunk) -> int:
    return len(chunk.text)


def _now() -> datetime:
    return datetime.now(UTC)


def _end_reason(done_reason: str | None) -> EndReason:
    # What the model API says ("stop", "length", "load", ...) maps onto the
    # reasons the protocol defines.
    return EndReason.LENGTH if done_reason == "length" else EndReason.STOP


class ChatTurn:
    """One message and its answer. Create it when the message arrives (so it
    can be stopped from then on), then ``await run()``."""

    def __init__(self, ctx: TurnContext, message: ChatMessage) -> None:
        self.ctx = ctx
        self.message = message
        self.id = message.message_id
        self.conversation = message.conversation or ctx.default_conversation
        self.received = time.monotonic()
        self.created_at = _now()
        self.answer: list[str] = []
        self.first_token_ms = 0
        self.answer_tokens = 0  # model chunks with text, as received
        self.model = ""  # the model that answers (chosen in run())
        self.backend: str | None = None  # the backend that answered (from its chunks)
        self.stop_reason: StopReason | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False  # the answer task has begun running
        #: Why the answer could not start: its model is being pulled or loaded.
        self._loading: str | None = None
        #: The conversation's newest turn, if it went unanswered (its id).
        self._supersedes: int | None = None
        #: The most model output that waited for this client (characters).
        self.buffer = BufferStats()

    # ------------------------------------------------------------------ control
    def stop(self, reason: StopReason) -> None:
        """Stop the turn wherever it is (the first reason given wins)."""
        if self.stop_reason is not None:
            # Stopping already: a second cancel would land in the cleanup and
            # cut short the storing of what was said (a CANCEL, then the close).
            return
        self.stop_reason = reason
        # A task that has not run its first step would be cancelled before its
        # try block; it checks stop_reason as it starts instead.
        if self._task is not None and self._started and not self._task.done():
            self._task.cancel()

    async def _send(self, event: Event) -> None:
        await self.ctx.send(event)

    async def _say(self, event: Event) -> None:
        """Send, ignoring a client that is gone (the turn still finishes and stores)."""
        with contextlib.suppress(PeerGone, LocalProtocolError):
            await self.ctx.send(event)

    # ------------------------------------------------------------------ pipeline
    async def run(self) -> None:
        ctx = self.ctx
        services = ctx.services

        # 1. moderation, even for a message cancelled already: a refused message
        # is neither answered nor stored, whatever else happened to it.
        refusal = await services.moderate(self.message.text)
        if refusal is not None:
            metrics.message_outcome(Outcome.REFUSED, refusal.rule, session=ctx.log.session)
            ctx.log.warning("message refused: %s", refusal.rule.value.replace("_", " "),
                            event="moderation", message_id=self.id, rule=refusal.rule.value)
            # Always both, in this order, with the same text (docs/PROTOCOL.md
            # §6): the NOTICE says why, the ERROR ends the message. On v1 a
            # moderation notice closes the session and the error is dropped.
            await self._say(Notice(refusal.kind, refusal.message, self.id))
            await self._say(Error(ErrorCode.REFUSED, refusal.message, self.id))
            return

        # 2. a model the message names must be offered (the conversation's
        # model is read with its history, in line: step 4).
        if self.message.model:
            chosen = services.resolve_model(self.message.model)
            if chosen is None:
                metrics.message_outcome(Outcome.REJECTED, Reason.UNKNOWN_MODEL, session=ctx.log.session)
                ctx.log.info("unknown model requested", event="unknown_model",
                             message_id=self.id)
                await self._say(Error(ErrorCode.UNKNOWN_MODEL, UNKNOWN_MODEL, self.id))
                return
            self.model = chosen

        # 3 to 7 run in a task of their own so that a stop can cancel them.
        self._task = asyncio.create_task(self._answer(), name=f"turn-{ctx.log.session}-{self.id}")
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            # The session itself is being cancelled: stop the answer too, and
            # let it store what it has before we go.
            self.stop(StopReason.DISCONNECTED)
            with contextlib.suppress(BaseException):
                await self._task
            raise
        if self._loading is not None:
            metrics.message_outcome(Outcome.FAILED, Reason.MODEL_LOADING, session=ctx.log.session)
            await self._say(Notice(NoticeKind.MODEL_LOADING, f"{self._loading}.", self.id))
            await self._say(Error(ErrorCode.MODEL_LOADING,
                                  f"{self._loading}; try again in a moment.", self.id))

    async def _answer(self) -> None:
        self._started = True
        ctx = self.ctx
        services = ctx.services
        status = TurnStatus.ERROR
        final: Event | None = None
        prompt_tokens = 0
        filt = services.answer_filter(ctx.to_client_text)
        try:
            if self.stop_reason is not None:  # stopped before it could start
                raise asyncio.CancelledError

            async def in_line(position: int) -> None:
                await self._say(Notice(
                    NoticeKind.QUEUE, "waiting for your answer in another session to finish",
                    self.id, position=position,
                ))

            async def for_slot(position: int) -> None:
                await self._say(Notice(
                    NoticeKind.QUEUE, f"waiting for the model: position {position} in line",
                    self.id, position=position,
                ))

            # 3. one answer per user at a time
            async with services.user_turn(ctx.user, in_line):
                # 4. the conversation so far and its model: one read of the
                # store, in line, so the previous answer of the user is in it
                # whichever replica gave it.
                found = await services.conversation(ctx.user, self.conversation)
                history = found.messages
                if not self.message.model and found.model:
                    self.model = found.model
                # Asked again after it went unanswered: the new turn replaces it.
                self._supersedes = found.unanswered
                if self.stop_reason is None and (
                        loading := services.model_loading(self.model)) is not None:
                    # Not an answer: nothing is stored, and run() tells the
                    # user once the line is free for their next message.
                    self._loading = loading
                    return
                messages, trimmed = trim_history(
                    [*history, {"role": "user", "content": self.message.text}],
                    services.context_tokens,
                    system=services.system_prompt,
                )
                if trimmed:
                    # Not how many: turns beyond the budget are not even read
                    # (chat_server.history_cache), only that there were some.
                    await self._send(Notice(
                        NoticeKind.CONTEXT_TRIMMED,
                        "earlier messages were left out of the model's context "
                        "to fit its budget",
                        self.id,
                    ))

                # 5 and 6: a fair slot, then stream the answer. The slot is held
                # by the generation, not by the writes to the client; the buffer
                # between them is bounded: a client that reads slowly pauses its
                # own generation, and one that keeps it paused too long loses the
                # rest of the answer (the slot goes on; chat_server/coalesce.py).
                done_reason: str | None = None
                stream = services.generate(ctx.user, self.model, messages, for_slot)
                async with contextlib.aclosing(coalesce(
                    stream, limit=ANSWER_BUFFER_LIMIT, weight=_chunk_chars,
                    pause_budget=PAUSE_BUDGET, stats=self.buffer,
                )) as batches:
                    async for batch in batches:
                        self.backend = batch[0].backend or self.backend
                        done = False
                        for chunk in batch:
                            if chunk.text:
                                self.answer_tokens += 1
                            if chunk.done:
                                done = True
                                done_reason = chunk.done_reason
                                prompt_tokens = chunk.prompt_tokens or 0
                                if chunk.answer_tokens is not None:
                                    self.answer_tokens = chunk.answer_tokens
                        # Tokens that arrived together go out together (a huge
                        # batch in slices, the event loop free between them).
                        text = "".join(c.text for c in batch)
                        if text and not self.first_token_ms:
                            # The model's first token, whatever the filter holds back.
                            self.first_token_ms = max(1, self._elapsed_ms())
                        i = 0
                        while i < len(text):
                            if i:
                                await asyncio.sleep(0)
                            j = i + (REMOTE_SLICE_CHARS if filt.remote else FILTER_SLICE_CHARS)
                            out = await filt.feed(text[i:j])
                            if done and j >= len(text):
                                # The model is done: what the filter holds goes
                                # out in the same DELTA (one frame, not two).
                                out += await filt.finish()
                            await self._emit(out)
                            i = j
                await self._emit(await filt.finish())
                if filt.masked:
                    await self._send(Notice(
                        NoticeKind.ANSWER_MASKED,
                        "personal data or banned words were masked in this answer", self.id,
                    ))
                status = TurnStatus.COMPLETE
                final = AnswerEnd(
                    self.id, reason=_end_reason(done_reason).value, prompt_tokens=prompt_tokens,
                    answer_tokens=self.answer_tokens, first_token_ms=self.first_token_ms,
                    total_ms=self._elapsed_ms(), model=self.model, backend=self.backend or "",
                )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            reason = self.stop_reason or StopReason.DISCONNECTED
            status = reason.status
            prompt_tokens = 0  # the model reports it only at the end
            ctx.log.info("answer stopped: %s", reason.value, event="model_cancel",
                         message_id=self.id)
            if not self.model:
                # Stopped before it read its conversation (in line, say): it is
                # stored and ended with the model it would have had.
                with contextlib.suppress(Exception):
                    found = await services.conversation(ctx.user, self.conversation)
                    self.model, self._supersedes = found.model or "", found.unanswered
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._emit(await filt.finish())
            if reason is StopReason.SHUTDOWN and not self.answer:
                # Nothing was said yet: the user is told to ask again later.
                final = Error(ErrorCode.SHUTTING_DOWN, RESTARTING, self.id)
            elif (revocation := reason.revocation) is not None:
                # Fatal, with this message's id: it ends the answer and the session.
                final = Error(ErrorCode.SESSION_REVOKED, revocation, self.id)
            else:
                final = AnswerEnd(
                    self.id, reason=EndReason.CANCELLED.value, answer_tokens=self.answer_tokens,
                    first_token_ms=self.first_token_ms, total_ms=self._elapsed_ms(),
                    model=self.model, backend=self.backend or "",
                )
        except ConsumerTooSlow:
            status = StopReason.SLOW_READER.status
            ctx.log.warning("answer stopped: %s", StopReason.SLOW_READER.value,
                            event="slow_reader", message_id=self.id,
                            buffered_peak=self.buffer.peak)
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._emit(await filt.finish())
                await self._send(Notice(NoticeKind.INFO, SLOW_READER_NOTICE, self.id))
            final = AnswerEnd(
                self.id, reason=EndReason.CANCELLED.value, answer_tokens=self.answer_tokens,
                first_token_ms=self.first_token_ms, total_ms=self._elapsed_ms(),
                model=self.model, backend=self.backend or "",
            )
        except SchedulerClosed:
            status = StopReason.SHUTDOWN.status
            final = Error(ErrorCode.SHUTTING_DOWN, RESTARTING, self.id)
        except ModelError as exc:
            code = (ErrorCode.MODEL_UNAVAILABLE if isinstance(exc, ModelUnavailable)
                    else ErrorCode.MODEL_ERROR)
            self.backend = exc.backend or self.backend
            ctx.log.warning("model error: %s", exc.detail, event="model_error",
                            message_id=self.id, code=code.value, model=self.model,
                            backend=exc.backend or "")
            final = Error(code, str(exc), self.id)
            # What the model said before failing is still the user's to see.
            with contextlib.suppress(PeerGone, LocalProtocolError):
                await self._emit(await filt.finish())
        except PeerGone:
            status = StopReason.DISCONNECTED.status
        # 7. store, then acknowledge
        await self._store(status, prompt_tokens)
        self._record(status, final, prompt_tokens)
        if final is not None:
            await self._say(final)
        ctx.log.info("turn finished: %s", status, event="turn_end", message_id=self.id,
                     model=self.model, backend=self.backend or "", prompt_tokens=prompt_tokens,
                     answer_tokens=self.answer_tokens, first_token_ms=self.first_token_ms,
                     total_ms=self._elapsed_ms(), buffered_peak=self.buffer.peak)

    def _record(self, status: TurnStatus, final: Event | None, prompt_tokens: int) -> None:
        """The turn's outcome, tokens and timings, for the metrics."""
        code = final.code if isinstance(final, Error) else None
        if status is TurnStatus.COMPLETE:
            outcome, reason = Outcome.ANSWERED, Reason.NONE
        elif code is ErrorCode.MODEL_UNAVAILABLE:
            outcome, reason = Outcome.FAILED, Reason.MODEL_UNAVAILABLE
        elif code is ErrorCode.MODEL_ERROR:
            outcome, reason = Outcome.FAILED, Reason.MODEL_ERROR
        elif status is TurnStatus.CANCELLED:
            outcome, reason = Outcome.CANCELLED, Reason.USER
        elif code is ErrorCode.SHUTTING_DOWN or self.stop_reason is StopReason.SHUTDOWN:
            outcome, reason = Outcome.INTERRUPTED, Reason.SHUTDOWN
        elif code is ErrorCode.SESSION_REVOKED:  # the server ended the session
            outcome, reason = Outcome.INTERRUPTED, Reason.DISCONNECT
        elif code is not None:
            outcome, reason = Outcome.FAILED, Reason.INTERNAL
        else:
            outcome, reason = Outcome.INTERRUPTED, Reason.DISCONNECT
        metrics.message_outcome(outcome, reason, session=self.ctx.log.session)
        metrics.tokens(prompt_tokens, self.answer_tokens)
        metrics.answer_timing(self.first_token_ms / 1000 if self.first_token_ms else None,
                              self._elapsed_ms() / 1000 if outcome is Outcome.ANSWERED else None)

    async def _emit(self, text: str) -> None:
        if not text:
            return
        self.answer.append(text)
        await self._send(AnswerDelta(text, self.id))

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self.received) * 1000)

    async def _store(self, status: TurnStatus, prompt_tokens: int) -> None:
        services = self.ctx.services
        answer = "".join(self.answer)
        turn = StoredTurn(
            user=self.ctx.user,
            conversation=self.conversation,
            created_at=self.created_at,
            completed_at=_now(),
            model=self.model,
            backend=self.backend,
            user_text=self.message.text,
            answer_text=answer,
            prompt_tokens=prompt_tokens,
            answer_tokens=self.answer_tokens,
            status=status,
        )
        saved = await services.save(turn, supersedes=self._supersedes)
        # A long answer leaves its frames and filter windows behind in the heap.
        give_back(max(len(answer), self.buffer.total))
        if not saved:
            await self._say(Notice(
                NoticeKind.INFO,
                "this turn could not be saved to the history (storage error); "
                "the server keeps serving",
                self.id,
            ))
