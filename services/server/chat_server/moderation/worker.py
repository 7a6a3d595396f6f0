"""
chat_server.moderation.worker
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Moderation's heavy steps in a process of their own, so that no message or
answer can stall the other sessions (docs/SECURITY.md §4, docs/BENCHMARKS.md
"Stalls").

Why a process. The detectors are pure Python plus ``phonenumbers`` (pure
Python too) and many short regular-expression calls: a 64 KiB message of
random digit groups costs seconds, an answer slice of them tens of
milliseconds. In a thread of the server that work still holds the GIL: the
event loop gets it back only every switch interval (5 ms), once per system
call it makes, so a PING round trip took 55-85 ms at p99. A second process
has its own interpreter and GIL; the loop only waits for the answer.

What goes there (the rules are :func:`message_inline` and
:func:`slice_inline`; anything else is checked on the loop, where it costs
microseconds):

* a message longer than :data:`INLINE_CHARS` characters, or with
  :data:`HEAVY_DIGITS` or more numeric characters (the phone scan's cost is
  per digit group: ``libphonenumber`` checks of up to
  :data:`~chatcore.privacy.MAX_PHONE_DIGITS` digits per group);
* every step of an answer from its first slice with :data:`HEAVY_DIGITS` or
  more numeric characters on (its held text may be such a run), or from the
  first step on the loop that took longer than :data:`LOCAL_STEP_BUDGET`
  (whatever made it slow).

The answer filter itself moves: an :class:`AnswerFilter` pickles as its state
(the window it holds, a few counters) plus the banned list's entries and the
phone regions; the worker builds each list once and keeps it. So a step done
there is exactly the step done here: same code, same state, and the filter
comes back with its new state (tests/moderation/test_worker.py checks that a
stream through the worker equals the whole-text mask, for any split).

One worker process (the machines this runs on have few cores; the loop's
process needs one), started with the server (``start()``, ``spawn``: no fork
of a threaded process) and loaded with the list before the first message.
At most :data:`QUEUE` steps wait for it at a time; further callers wait their
turn on the event loop (no memory for them). If the worker dies or cannot
start, the step runs in a thread instead (as before this module: correct,
only less isolated), the failure is logged, and a new worker is started for
a later step (at most every :data:`RESPAWN_INTERVAL` seconds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from chatcore.privacy import PersonalDataDetector

from ..memory import apply_allocation_policy, give_back
from .answer_filter import AnswerFilter
from .banned_words import BannedWords, WatchedBannedWords
from .normalize import displayed_reading, model_reading

__all__ = [
    "BANNED_WORD",
    "HEAVY_DIGITS",
    "INLINE_CHARS",
    "LOCAL_STEP_BUDGET",
    "QUEUE",
    "RESPAWN_INTERVAL",
    "DetectionWorker",
    "SteppedAnswerFilter",
    "check_message",
    "message_inline",
    "numeric_chars",
    "slice_inline",
]

log = logging.getLogger("chat_server.moderation")

#: A message up to this many characters (with few digits) is checked on the
#: event loop: at most about 3 ms whatever its letters (``s h i t …``, look-alikes).
INLINE_CHARS = 512
#: A message or answer slice with this many numeric characters goes to the worker.
HEAVY_DIGITS = 8
#: An answer whose step on the loop took longer than this goes to the worker
#: for the rest of its steps (seconds).
LOCAL_STEP_BUDGET = 0.002
#: Steps that may wait for the worker at once (the rest wait on the loop).
QUEUE = 16

#: After the worker failed, a new one is started at most this often (seconds);
#: steps run in a thread meanwhile.
RESPAWN_INTERVAL = 10.0

#: What :func:`check_message` returns for a banned word.
BANNED_WORD = "banned_word"

T = TypeVar("T")


def numeric_chars(text: str) -> int:
    """Characters the phone scan may read as digits (``str.isnumeric``:
    ASCII and other decimal digits, ``❾``, ``①``, CJK numerals, fractions)."""
    if text.isascii():
        return len(text) - len(text.translate(_NO_DIGITS))
    return sum(1 for c in text if c.isnumeric())


_NO_DIGITS = str.maketrans("", "", "0123456789")


def message_inline(text: str) -> bool:
    """Is a user's message cheap enough to check on the event loop?"""
    return len(text) <= INLINE_CHARS and numeric_chars(text) < HEAVY_DIGITS


def slice_inline(delta: str) -> bool:
    """Is an answer slice cheap enough to filter on the event loop (unless
    the answer was sent to the worker for its other steps)?"""
    return numeric_chars(delta) < HEAVY_DIGITS


def check_message(banned: BannedWords, privacy: PersonalDataDetector, text: str) -> str | None:
    """``BANNED_WORD``, the privacy notice, or None: moderation's verdict on a
    user's message (banned words first). Runs in either process.

    A message is checked as written and, where they differ, as the model
    reads it and as it is displayed: Unicode tag characters (U+E0020-U+E007E)
    are invisible, and the detectors drop them, but a language model reads
    each as the ASCII character it encodes ("ASCII smuggling"); a right-to-left
    override shows the letters after it reversed
    (:func:`~chat_server.moderation.normalize.displayed_reading`).
    A banned word, an e-mail address or a phone number in either is refused."""
    readings = [text]
    for other in (model_reading(text), displayed_reading(text)):
        if other is not None:
            readings.append(other)
    for reading in readings:
        if banned.contains(reading):
            return BANNED_WORD
    for reading in readings:
        notice = privacy.refusal_notice(reading)
        if notice is not None:
            return notice
    return None


#: What checking a message may use per character at its peak (the detectors'
#: folded copies and their index maps), reported as released afterwards.
_BYTES_PER_CHAR = 64


def _check_and_give_back(banned: BannedWords, privacy: PersonalDataDetector, text: str) -> str | None:
    """:func:`check_message`, then the memory it used goes back to the OS (a
    64 KiB message's copies are megabytes; the worker lives as long as the server)."""
    verdict = check_message(banned, privacy, text)
    give_back(len(text) * _BYTES_PER_CHAR)
    return verdict


def _filter_step(filt: AnswerFilter, delta: str, finish: bool) -> tuple[str, AnswerFilter]:
    out = filt.feed(delta) if delta else ""
    if finish:
        out += filt.finish()
    return out, filt


def _worker_init() -> None:
    # The server's Ctrl+C is the server's to handle; the worker goes when the
    # server shuts the pool down, or when the server is gone (killed: the
    # pool's pipes stay open in the worker, which would wait on them for ever).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_allocation_policy()  # the server's own (chat_server.memory)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent process has ended
    os._exit(0)


def _warm(banned: BannedWords, privacy: PersonalDataDetector) -> int:
    """Load the list and the phone metadata (unpickling did), and run them once."""
    check_message(banned, privacy, "warm up +1 212 736 5000")
    return os.getpid()


class DetectionWorker:
    """The worker process (see the module docstring). Not started: every
    step runs in a thread (embedding, in-process tests)."""

    def __init__(self, *, queue: int = QUEUE, respawn_interval: float = RESPAWN_INTERVAL) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._wanted = False
        self._slots = asyncio.Semaphore(queue)
        self._warned = False
        self._failed_at = float("-inf")
        self._respawn_interval = respawn_interval
        #: Steps run in a thread because the worker failed (or was never started).
        self.fallbacks = 0
        #: Steps the worker ran.
        self.steps = 0
        self.pid: int | None = None

    def start(self, banned: BannedWords | WatchedBannedWords, privacy: PersonalDataDetector) -> None:
        """Start the process and load it with the list now (not on the first message)."""
        self._wanted = True
        self._spawn(banned.snapshot(), privacy)

    def _spawn(self, banned: BannedWords | None = None,
               privacy: PersonalDataDetector | None = None) -> None:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init)
        self._pool = pool
        if banned is not None and privacy is not None:
            warm = pool.submit(_warm, banned, privacy)
            warm.add_done_callback(self._warmed)

    def _warmed(self, fut: concurrent.futures.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.pid = fut.result()
            log.info("moderation worker ready (pid %d)", self.pid,
                     extra={"event": "moderation_worker"})

    def close(self) -> None:
        self._wanted = False
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker (a thread if there is none, or it failed)."""
        async with self._slots:
            pool = self._pool
            if pool is None and self._wanted \
                    and time.monotonic() - self._failed_at >= self._respawn_interval:
                try:
                    self._spawn()
                except OSError as exc:  # pragma: no cover - resources exhausted
                    self._fell_back(f"cannot start the moderation worker: {exc}")
                pool = self._pool
            if pool is not None:
                loop = asyncio.get_running_loop()
                try:
                    result = await loop.run_in_executor(pool, fn, *args)
                except BrokenProcessPool as exc:
                    if self._pool is pool:
                        self._pool = None
                        self._failed_at = time.monotonic()
                        pool.shutdown(wait=False, cancel_futures=True)
                    self._fell_back(f"the moderation worker stopped ({exc or 'killed'}); "
                                    f"a new one starts in {self._respawn_interval:.0f} s at most")
                else:
                    self.steps += 1
                    self._warned = False  # the next failure is logged again
                    return result
            elif self._wanted:
                self._fell_back("the moderation worker is not running")
            else:
                self.fallbacks += 1
            return await asyncio.to_thread(fn, *args)

    def _fell_back(self, why: str) -> None:
        self.fallbacks += 1
        if not self._warned:
            self._warned = True
            log.error("%s; this step runs in a thread of the server meanwhile", why,
                      extra={"event": "moderation_worker"})
        else:
            log.debug("%s", why)

    async def check_message(self, banned: BannedWords, privacy: PersonalDataDetector,
                            text: str) -> str | None:
        """:func:`check_message` on the loop if the text is cheap, else in the worker."""
        if message_inline(text):
            return check_message(banned, privacy, text)
        return await self.run(_check_and_give_back, banned, privacy, text)


class SteppedAnswerFilter:
    """An :class:`AnswerFilter` whose costly steps run in the worker. Same
    output as the filter; ``feed`` and ``finish`` are coroutines.

    A step runs on the loop while the answer is :attr:`remote` False. The
    answer turns remote (for the rest of its steps) at its first slice that
    is not :func:`slice_inline`, or when a step on the loop took longer than
    :data:`LOCAL_STEP_BUDGET`: what it holds may then be a digit run, and the
    worker's memo of phone checks is there. A remote step does not hold the
    loop, so it may be larger (the turn feeds ``REMOTE_SLICE_CHARS``)."""

    def __init__(self, filt: AnswerFilter, worker: DetectionWorker, *,
                 step_budget: float = LOCAL_STEP_BUDGET) -> None:
        self._filt = filt
        self._worker = worker
        #: Seconds a step may take on the loop before the answer turns remote.
        self._step_budget = step_budget
        self._remote = False
        #: Steps run on the loop / in the worker (what tests and benches count).
        self.local_steps = 0
        self.remote_steps = 0

    @property
    def remote(self) -> bool:
        """Do this answer's steps run in the worker?"""
        return self._remote

    @property
    def masked(self) -> bool:
        return self._filt.masked

    @property
    def pending(self) -> int:
        return self._filt.pending

    @property
    def scanned(self) -> int:
        return self._filt.scanned

    async def _step(self, delta: str, finish: bool) -> str:
        if self._remote or not slice_inline(delta):
            self._remote = True
            self.remote_steps += 1
            out, self._filt = await self._worker.run(_filter_step, self._filt, delta, finish)
            return out
        self.local_steps += 1
        t0 = time.perf_counter()
        out, _ = _filter_step(self._filt, delta, finish)
        if time.perf_counter() - t0 > self._step_budget:
            self._remote = True
        return out

    async def feed(self, delta: str) -> str:
        """The masked text that can go out after ``delta``."""
        if not delta:
            return ""
        return await self._step(delta, False)

    async def finish(self) -> str:
        """The rest of the answer, masked."""
        if self._filt.pending == 0:
            self._filt.finish()
            return ""
        return await self._step("", True)
