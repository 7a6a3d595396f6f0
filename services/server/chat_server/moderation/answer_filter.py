"""
chat_server.moderation.answer_filter
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Masks personal data and banned words in the model's answer *while it streams*,
in the form the client receives it.

The contract is exact: for any way the answer is cut into deltas,
``"".join(f.feed(d) for d in deltas) + f.finish() == mask_answer(answer, …)``,
and ``mask_answer`` equals masking the whole text at once with both detectors
(except inside a "word" longer than :data:`MAX_WORD` characters, below).

How. The filter keeps the text it has not sent yet. After each delta it asks
both detectors for a *scan* of that text (:meth:`BannedWords.scan`,
:meth:`PersonalDataDetector.scan`): the findings, the **open start** from which
something may still turn into a finding once more text arrives (the last word,
a join of single letters that still spells the beginning of a banned word,
words that begin a phrase, an e-mail address in progress, the last
:data:`~chatcore.privacy.MAX_PHONE_DIGITS` digits of a run of digit groups or
the last few terms of a list of numbers that may still grow),
and the spans no cut may split. It sends everything up to the open start
(even part of a word: ``One,`` goes out with its comma), but never into a
finding or a digit run. It keeps a **window** from the last **cut** at or
before what it sent and not past the open start (which may move back when
more text shows that a word can still change): the start of a word (after whitespace) that no finding,
no digit run and no context a detector reads (the sign of an amount before a
number) straddles. Both detectors restart cleanly there, so masking the
pieces equals masking the whole; the text sent since the cut stays in the
window as the context the detectors need.

So ordinary prose streams word by word, and so do words that end in digits
(``w12``, ``2019,``, ``v3.2``): what is held back is the candidate in
progress plus at most one word. The work per delta is a scan of the new text
plus the window; a window that is a single word is scanned on each delta only
while it is at most :data:`PARTIAL_WORD` characters long.

A word longer than :data:`MAX_WORD` characters (no whitespace in it) is cut
into pieces of that size, each masked on its own: nothing real is that long,
and without it one such word could make the filter hold an unbounded answer.

``transform`` is applied to each delta first (per character: it must map a
concatenation to the concatenation of its images, as transliteration does):
on the original protocol the answer is sent as ASCII, and it is that ASCII
that must be clean, so the filter masks the transliterated text
(:func:`to_v1_answer_text`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

from chatcore.privacy import (
    EMAIL_MASK,
    PHONE_MASK,
    PersonalData,
    PersonalDataDetector,
    detector_for,
    structural_ascii,
)
from chatcore.protocol import to_v1_text, without_controls

from .banned_words import BannedWords, WatchedBannedWords

__all__ = ["MAX_WORD", "AnswerFilter", "mask_answer", "to_v1_answer_text", "to_v2_answer_text"]

#: Longest run of non-whitespace characters masked as one piece.
MAX_WORD = 1024
#: A window that is one word is scanned on every delta only up to this length
#: (what an ordinary word with its punctuation needs to go out before it ends).
PARTIAL_WORD = 64


#: Explicit directional overrides (LRO, RLO): a terminal or page that applies
#: the Unicode bidi algorithm shows the letters after one in reverse order, so
#: the logical "kcuf" after an RLO reads as the banned word ("Trojan Source",
#: CVE-2021-42574). Embeddings and isolates reorder runs, not the letters of a
#: word, and stay.
_OVERRIDES = dict.fromkeys(map(ord, "\u202d\u202e"))


def to_v2_answer_text(text: str) -> str:
    """The answer as a v2 client gets it, the ``transform`` the server gives
    the filter on v2: without explicit directional overrides, so that what is
    masked reads the same in logical and in displayed order, and without
    control characters other than newline and tab (``without_controls``), so
    that it cannot drive the reader's terminal and what is masked is what is
    shown (``fu\\x1bck`` is masked as the banned word it displays)."""
    if "\u202e" in text or "\u202d" in text:
        text = text.translate(_OVERRIDES)
    return without_controls(text)


def to_v1_answer_text(text: str) -> str:
    """The original client's form of answer text, the ``transform`` the server
    gives the filter on v1: ASCII (``to_v1_text``), with what the detectors
    read as ``@ . - +`` or a digit written as that character first
    (:func:`chatcore.privacy.structural_ascii`), so that transliteration cannot
    turn an address or a number the detectors would find into one they do not
    (``raj@gmail·com`` is not sent as ``raj@gmail-com``). anyascii drops the
    directional overrides (:func:`to_v2_answer_text`)."""
    return to_v1_text(structural_ascii(text))


def _detector(privacy: bool | PersonalDataDetector | None) -> PersonalDataDetector | None:
    if privacy is True:
        return detector_for()
    if not privacy:
        return None
    return privacy


def mask_answer(
    text: str,
    banned: BannedWords | WatchedBannedWords,
    *,
    privacy: bool | PersonalDataDetector | None = True,
    transform: Callable[[str], str] | None = None,
) -> str:
    """The whole-text mask the streaming filter reproduces: e-mails become
    ``[email removed]``, phone numbers ``[phone removed]`` (unless ``privacy``
    is off), and banned words as many ``*`` as they have characters. A banned
    word that overlaps personal data is masked only outside it."""
    f = AnswerFilter(banned, privacy=privacy, transform=transform)
    return f.feed(text) + f.finish()


def _apply(text: str, pii: list[PersonalData], words: list[tuple[int, int]]) -> str:
    """``text`` with the findings replaced (banned spans clipped around personal data)."""
    if not pii and not words:
        return text
    edits: list[tuple[int, int, str]] = [
        (p.start, p.end, EMAIL_MASK if p.kind == "email" else PHONE_MASK) for p in pii
    ]
    k = 0
    for s, e in words:
        while k < len(pii) and pii[k].end <= s:
            k += 1
        pos = s
        j = k
        while j < len(pii) and pii[j].start < e:
            if pii[j].start > pos:
                edits.append((pos, pii[j].start, "*" * (pii[j].start - pos)))
            pos = max(pos, pii[j].end)
            j += 1
        if pos < e:
            edits.append((pos, e, "*" * (e - pos)))
    edits.sort()
    parts = []
    pos = 0
    for s, e, repl in edits:
        parts.append(text[pos:s])
        parts.append(repl)
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def _with_head(words: list[tuple[int, int]], head: int) -> list[tuple[int, int]]:
    """Sorted, merged banned spans with ``(0, head)`` added."""
    if head <= 0:
        return words
    out = [(0, head)]
    for s, e in words:
        if s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s")
# The word at the end of the text; tried only at word starts (a plain "\S+\Z"
# backtracks through every word before a trailing space: quadratic).
_LAST_WORD = re.compile(r"(?<!\S)\S+\Z")


class AnswerFilter:
    """Streaming masker: ``feed(delta)`` returns what is safe to send now,
    ``finish()`` the rest. ``masked`` turns True once anything was masked.

    The banned list is fixed at construction (a reload mid-answer cannot change
    how the two halves of an answer are judged)."""

    def __init__(
        self,
        banned: BannedWords | WatchedBannedWords,
        *,
        privacy: bool | PersonalDataDetector | None = True,
        transform: Callable[[str], str] | None = None,
    ) -> None:
        self._banned = banned.snapshot()
        self._privacy = _detector(privacy)
        self._transform = transform
        # The window: the text since the last clean cut. Its first ``_sent``
        # characters went out already (the context the detectors need to
        # judge the rest); the others are held.
        self._buf = ""
        self._sent = 0
        # The window's first characters that are masked for good: the rest of
        # a banned span the last cut went through (its start is gone).
        self._head = 0
        self._run = 0  # length of the word at the end of the window
        self.masked = False
        #: Characters the detectors have looked at so far (the filter's work).
        self.scanned = 0

    # ------------------------------------------------------------------ internals
    def _emit(self, text: str, start: int, end: int, pii: list[PersonalData],
              words: list[tuple[int, int]]) -> str:
        """``text[start:end]`` masked with the personal data that lies inside
        it and the banned spans that reach into it (what they cover there is
        masked for good)."""
        inside_pii = [PersonalData(p.kind, p.start - start, p.end - start, p.text)
                      for p in pii if start <= p.start and p.end <= end]
        inside_words = [(max(s, start) - start, min(e, end) - start)
                        for s, e in words if s < end and e > start]
        if inside_pii or inside_words:
            self.masked = True
        return _apply(text[start:end], inside_pii, inside_words)

    def _final(self, end: int) -> str:
        """Mask the window up to ``end`` as a whole text (nothing follows it),
        send what was not sent, and start a fresh window there."""
        head = self._buf[:end]
        self.scanned += len(head)
        pii = self._privacy.find(head) if self._privacy is not None else []
        words = _with_head(self._banned.find(head), min(self._head, end))
        out = self._emit(head, self._sent, end, pii, words)
        self._buf = self._buf[end:]
        self._sent = 0
        self._head = max(0, self._head - end)
        return out

    def _partial(self) -> str:
        """Send what no later text can change; keep the rest."""
        buf = self._buf
        self.scanned += len(buf)
        words, banned_open = self._banned.scan(buf)
        words = _with_head(words, self._head)
        open_start = banned_open
        blocked: list[tuple[int, int]] = []
        pii: list[PersonalData] = []
        if self._privacy is not None:
            scan = self._privacy.scan(buf)
            open_start = min(open_start, scan.open_start)
            pii = scan.findings
            blocked.extend(scan.blocked)
        # Release up to the open start, but never into personal data or a
        # stretch of a digit run (one that reaches past the open start may
        # still change). Banned spans may be split: what they cover before
        # the open start is masked for good.
        release = open_start
        for s, e in sorted(blocked, reverse=True):
            if s < release < e:
                release = s
        out = ""
        if release > self._sent:
            out = self._emit(buf, self._sent, release, pii, words)
            self._sent = release
        # Drop what was sent up to the last clean cut: both detectors restart
        # there, so the window needs no text before it. A banned span the cut
        # goes through is masked up to the banned open start (that part is
        # settled); the new window keeps that as its masked head, since the
        # detectors no longer see where the span began.
        # Not past the open start either: it may move back once more text
        # shows that a word can still change (a digit group followed by "_"),
        # and what lies after it has not been judged, so a cut there could
        # part a judgement from the text it reads.
        cut = self._last_cut(buf, min(self._sent, open_start), blocked)
        if cut > 0:
            head = self._head - cut
            for s, e in words:
                if s < cut < e:
                    head = max(head, min(e, banned_open) - cut)
                    break
            self._head = max(0, head)
            self._buf = buf[cut:]
            self._sent -= cut
        return out

    @staticmethod
    def _last_cut(buf: str, limit: int, blocked: list[tuple[int, int]]) -> int:
        """The last place after whitespace at or before ``limit`` that no
        blocked span straddles; 0 if there is none."""
        blocked.sort()
        starts = [s for s, _ in blocked]
        # Running maximum of the ends, to ask "does any span with start < c end after c?".
        reach: list[int] = []
        top = -1
        for _, e in blocked:
            top = max(top, e)
            reach.append(top)
        c = min(limit, len(buf) - 1)
        while c > 0:
            if buf[c - 1].isspace():
                k = bisect.bisect_left(starts, c)
                if k == 0 or reach[k - 1] <= c:
                    return c
            c -= 1
        return 0

    # ------------------------------------------------------------------ API
    def feed(self, delta: str) -> str:
        """Add the next piece of the answer; return the masked text that can be
        sent now (possibly empty)."""
        if self._transform is not None:
            delta = self._transform(delta)
        if not delta:
            return ""
        out = []
        pos = len(self._buf) - self._run  # the start of the word that was last
        self._buf += delta
        # Words longer than MAX_WORD are masked in pieces (see the module docstring).
        while (m := _WORD.search(self._buf, pos)) is not None:
            if m.end() - m.start() > MAX_WORD:
                out.append(self._final(m.start() + MAX_WORD))
                pos = 0
            else:
                pos = m.end()
        buf = self._buf
        last = _LAST_WORD.search(buf, max(0, len(buf) - MAX_WORD - 1))
        self._run = last.end() - last.start() if last is not None else 0
        # A window without whitespace is one word: it is scanned while it is
        # short enough to be an ordinary word (which may go out before it
        # ends), else only when it ends or reaches MAX_WORD.
        if len(buf) > self._sent and (len(buf) <= PARTIAL_WORD or _SPACE.search(buf) is not None):
            out.append(self._partial())
        return "".join(out)

    def finish(self) -> str:
        """The rest of the answer, masked. The filter is empty afterwards."""
        out = self._final(len(self._buf)) if len(self._buf) > self._sent else ""
        self._buf, self._sent, self._run, self._head = "", 0, 0, 0
        return out

    @property
    def pending(self) -> int:
        """Characters received (after the transform) but not yet sent."""
        return len(self._buf) - self._sent
