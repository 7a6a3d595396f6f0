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
:data:`~chatcore.privacy.MAX_PHONE_DIGITS` digits of a run of digit groups),
and the spans no cut may split. It then sends everything up to the last
**cut** at or before the open start: the start of a word (after whitespace)
that no finding and no digit run straddles. Both detectors restart cleanly
there, so masking the pieces equals masking the whole.

So ordinary prose streams word by word, and so do words that end in digits
(``w12``, ``2019,``, ``v3.2``): what is held back is the candidate in
progress plus at most one word. The work per delta is a scan of the new text
plus what is held back.

A word longer than :data:`MAX_WORD` characters (no whitespace in it) is cut
into pieces of that size, each masked on its own: nothing real is that long,
and without it one such word could make the filter hold an unbounded answer.

``transform`` is applied to each delta first (per character: it must map a
concatenation to the concatenation of its images, as transliteration does):
on the original protocol the answer is sent as ASCII, and it is that ASCII
that must be clean, so the filter masks the transliterated text.
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
)

from .banned_words import BannedWords, WatchedBannedWords

__all__ = ["MAX_WORD", "AnswerFilter", "mask_answer"]

#: Longest run of non-whitespace characters masked as one piece.
MAX_WORD = 1024


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


_WORD = re.compile(r"\S+")
_WORD_START = re.compile(r"\s\S")
_LAST_WORD = re.compile(r"\S+\Z")


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
        self._buf = ""
        self._run = 0  # length of the word at the end of the buffer
        self.masked = False
        #: Characters the detectors have looked at so far (the filter's work).
        self.scanned = 0

    # ------------------------------------------------------------------ internals
    def _emit(self, text: str, pii: list[PersonalData], words: list[tuple[int, int]]) -> str:
        if pii or words:
            self.masked = True
        return _apply(text, pii, words)

    def _final(self, text: str) -> str:
        self.scanned += len(text)
        pii = self._privacy.find(text) if self._privacy is not None else []
        return self._emit(text, pii, self._banned.find(text))

    def _partial(self) -> str:
        """Send what no later text can change; keep the rest."""
        buf = self._buf
        self.scanned += len(buf)
        words, open_start = self._banned.scan(buf)
        blocked = list(words)
        pii: list[PersonalData] = []
        if self._privacy is not None:
            scan = self._privacy.scan(buf)
            open_start = min(open_start, scan.open_start)
            pii = scan.findings
            blocked.extend(scan.blocked)
        cut = self._last_cut(buf, open_start, blocked)
        if cut <= 0:
            return ""
        self._buf = buf[cut:]
        return self._emit(
            buf[:cut], [p for p in pii if p.end <= cut], [(s, e) for s, e in words if e <= cut]
        )

    @staticmethod
    def _last_cut(buf: str, limit: int, blocked: list[tuple[int, int]]) -> int:
        """The last start of a word at or before ``limit`` that no blocked
        span straddles; 0 if there is none."""
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
            if buf[c - 1].isspace() and not buf[c].isspace():
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
                cut = m.start() + MAX_WORD
                head, self._buf = self._buf[:cut], self._buf[cut:]
                out.append(self._final(head))
                pos = 0
            else:
                pos = m.end()
        buf = self._buf
        last = _LAST_WORD.search(buf, max(0, len(buf) - MAX_WORD - 1))
        self._run = last.end() - last.start() if last is not None else 0
        if _WORD_START.search(buf) is not None:  # else there is no place to cut yet
            out.append(self._partial())
        return "".join(out)

    def finish(self) -> str:
        """The rest of the answer, masked. The filter is empty afterwards."""
        head, self._buf = self._buf, ""
        return self._final(head) if head else ""

    @property
    def pending(self) -> int:
        """Characters received (after the transform) but not yet sent."""
        return len(self._buf)
