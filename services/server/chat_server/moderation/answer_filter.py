"""
chat_server.moderation.answer_filter
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Masks personal data and banned words in the model's answer *while it streams*.

The contract is exact: for any way the answer is cut into deltas,
``"".join(f.feed(d) for d in deltas) + f.finish() == mask_answer(answer, banned)``.

How: the filter keeps the text it has not emitted yet and, after each delta,
looks for the last **safe cut**, a position no finding can straddle whatever
text comes next. It emits ``mask_answer`` of everything before the cut and keeps
the rest. Both detectors are local by design (per-character folding, tokens
that end at spaces, bounded look-arounds), so masking the pieces gives the same
result as masking the whole. A cut at ``c`` is safe when:

* the character before ``c`` is a line break: nothing is joined across one (no
  phone number, e-mail, token, phrase or letter run spans a ``\\n``); or
* the character before ``c`` is a space, the next word starts with a letter, and
  the previous word ends with two or more letters (not all ``x``, which
  libphonenumber reads as punctuation) optionally followed by ``, . ; : ! ? ' "
  * ` _`` and closing quotes. Then:

  - no phone number crosses it: candidates hold only digits and punctuation,
    and letters before the space separate them (an extension "ext 12" needs
    digits after the space, and the next word starts with a letter);
  - no e-mail crosses it: addresses hold no spaces except around ``@`` or a
    bracketed ``[at]``/``[dot]``, and neither side of the cut has those;
  - no banned-word join crosses it: words of two or more letters are never joined
    across a space (only single letters are);
  - no phrase crosses it: the banned list is asked whether the last words could
    begin one (:meth:`BannedWords.phrase_may_continue`).

Ordinary prose therefore streams word by word; a word is held back only while
the next one might change its fate (a phone number in groups, "a b c …").
Text without any safe cut (64 KiB of digits) waits for :meth:`finish`.
"""

from __future__ import annotations

import functools
import unicodedata

from chatcore.privacy import EMAIL_MASK, PHONE_MASK, find_personal_data

from .banned_words import BannedWords, WatchedBannedWords
from .normalize import fold

__all__ = ["AnswerFilter", "mask_answer"]

_SAFE_TRAIL = frozenset(",.;:!?'\"*`_\u2019\u201d\u2026")
#: How far back the phrase check looks, beyond the phrase's own length.
_PHRASE_WINDOW = 256
#: Candidate cuts examined per feed, newest first.
_MAX_CANDIDATES = 8


def mask_answer(text: str, banned: BannedWords | WatchedBannedWords, *, privacy: bool = True) -> str:
    """The whole-text mask the streaming filter reproduces: e-mails become
    ``[email removed]``, phone numbers ``[phone removed]`` (if ``privacy``), and
    banned words as many ``*`` as they have characters. A banned word that
    overlaps personal data is masked only outside it. Both detectors run on the
    original ``text``."""
    return _mask(text, banned.snapshot(), privacy=privacy)[0]


def _mask(text: str, banned: BannedWords, *, privacy: bool) -> tuple[str, bool]:
    pii = find_personal_data(text) if privacy else []
    words = banned.find(text)
    if not pii and not words:
        return text, False
    # (start, end, replacement); banned spans clipped around personal data.
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
    return "".join(parts), True


@functools.lru_cache(maxsize=4096)
def _is_plain_letter(ch: str) -> bool:
    """A letter in every view the detectors take of it (original, NFKC for
    phones and e-mails, the banned-word fold)."""
    if ch.isascii():
        return ch.isalpha()
    if not ch.isalpha():
        return False
    nfkc = unicodedata.normalize("NFKC", ch)
    folded = fold(ch).text
    return nfkc.isalpha() and bool(folded) and folded.isalpha()


@functools.lru_cache(maxsize=1024)
def _is_x(ch: str) -> bool:
    return unicodedata.normalize("NFKC", ch).casefold() == "x"


def _is_space(ch: str) -> bool:
    return ch.isspace() and unicodedata.category(ch) != "Cf"


class AnswerFilter:
    """Streaming masker: ``feed(delta)`` returns what is safe to send now,
    ``finish()`` the rest. ``masked`` turns True once anything was masked.

    The banned list is fixed at construction (a reload mid-answer cannot change
    how the two halves of an answer are judged)."""

    def __init__(self, banned: BannedWords | WatchedBannedWords, *, privacy: bool = True) -> None:
        self._banned = banned.snapshot()
        self._privacy = privacy
        self._buf = ""
        self.masked = False
        self._phrase_window = _PHRASE_WINDOW

    # ------------------------------------------------------------------ cut rules
    def _safe_cut(self, c: int) -> bool:
        """May we cut ``self._buf`` before index ``c`` (0 < c < len)?

        ``self._buf`` always starts at a safe cut, so looking back no further
        than its start is enough."""
        buf = self._buf
        before = buf[c - 1]
        if before == "\n":
            return True
        if not _is_space(before) or not _is_plain_letter(buf[c]):
            return False
        j = c - 1
        while j >= 0 and _is_space(buf[j]):
            j -= 1
        if j < 0:
            return True  # only spaces since the stream began
        while j >= 0 and buf[j] in _SAFE_TRAIL:
            j -= 1
        letters = 0
        not_x = False
        while j >= 0 and letters < 8 and _is_plain_letter(buf[j]):
            not_x = not_x or not _is_x(buf[j])
            letters += 1
            j -= 1
        if letters < 2 or not not_x:
            return False
        if self._banned.has_phrases:
            lo = max(0, c - self._phrase_window)
            if self._banned.phrase_may_continue(buf[lo:c], truncated=lo > 0):
                return False
        return True

    def _last_safe_cut(self, first: int) -> int:
        """The largest safe cut at or after ``first``, or 0."""
        buf = self._buf
        examined = 0
        for c in range(len(buf) - 1, max(first, 1) - 1, -1):
            if buf[c - 1] == "\n" or (_is_space(buf[c - 1]) and not _is_space(buf[c])):
                if self._safe_cut(c):
                    return c
                examined += 1
                if examined >= _MAX_CANDIDATES:
                    break
        # Too many unsafe candidates: a line break in the new text is always a cut.
        return buf.rfind("\n", first) + 1

    # ------------------------------------------------------------------ API
    def _emit(self, text: str) -> str:
        out, masked = _mask(text, self._banned, privacy=self._privacy)
        self.masked = self.masked or masked
        return out

    def feed(self, delta: str) -> str:
        """Add the next piece of the answer; return the masked text that can be
        sent now (possibly empty)."""
        if not delta:
            return ""
        first = len(self._buf)
        self._buf += delta
        c = len(self._buf) if self._buf.endswith("\n") else self._last_safe_cut(first)
        if c <= 0:
            return ""
        head, self._buf = self._buf[:c], self._buf[c:]
        return self._emit(head)

    def finish(self) -> str:
        """The rest of the answer, masked. The filter is empty afterwards."""
        head, self._buf = self._buf, ""
        return self._emit(head) if head else ""

    @property
    def pending(self) -> int:
        """Characters received but not yet emitted."""
        return len(self._buf)
