"""
chat_server.moderation.normalize
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Turns text into the *detection copy* the banned-word matcher works on, and
back. Following docs/SECURITY.md §4, the pipeline per character is:

1. NFKD, then drop combining marks (category M): fullwidth ``ＡＢＣ``, ligatures
   and accents fold to plain letters (``fück`` -> ``fuck``), zalgo marks vanish.
   (NFKD+strip is NFKC plus accent removal; the brief asked for NFKC.)
2. A small confusables map: Cyrillic/Greek letters that look Latin (``ѕ``,
   ``а``, ``о``, ``Н``…). NFKC does not fold them; TR39 skeletons would, but a
   hand list of the common ones is enough and keeps us dependency-free.
3. ``str.casefold()``.
4. Format characters (category Cf: U+200B zero-width space, U+00AD soft hyphen,
   U+2060, BOM…) are dropped, so ``abc\u200bxyz`` reads ``abcxyz``.

The copy is only for detection (TR39: a skeleton must never be displayed); each
of its characters remembers the span of the original it came from, so matches
map back to the caller's text. Everything is per character, hence
``fold(a + b) == fold(a) + fold(b)``: the streaming answer filter relies on it.

Leetspeak is handled later, per token, by :func:`canonical`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["LEET", "Folded", "canonical", "fold", "runs"]

# Look-alikes NFKC leaves alone. Upper case too: casefold would otherwise turn
# Cyrillic "Н" into "н", which no longer looks like "h".
_CONFUSABLES = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    # Cyrillic upper case
    "А": "a", "В": "b", "Е": "e", "Ё": "e", "Һ": "h", "І": "i", "Ї": "i", "Ј": "j",
    "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t", "У": "y",
    "Х": "x", "Ѕ": "s", "Ԁ": "d", "Ԛ": "q", "Ԝ": "w", "Ӏ": "l",
    # Latin letters that casefold leaves distinct
    "ı": "i", "ſ": "s", "ɑ": "a", "ɡ": "g",
    # Greek
    "α": "a", "ο": "o", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t", "υ": "u",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
    "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
}

#: Leetspeak, applied to tokens. "1" and "!" stand for "i" or "l": canonical
#: forms merge "l" into "i" on *both* sides (list and text), so one lookup
#: covers both readings.
LEET = {
    "@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "|": "i", "l": "i",
    "0": "o", "$": "s", "5": "s", "7": "t",
}
_LEET_TABLE = str.maketrans(LEET)


@dataclass(frozen=True, slots=True)
class Folded:
    """The detection copy: ``text[i]`` came from ``original[starts[i]:ends[i]]``."""

    text: str
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


def _fold_char(ch: str) -> str:
    if ch.isascii():
        return ch.lower()
    if unicodedata.category(ch) == "Cf":
        return ""
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        if unicodedata.category(c)[0] == "M":
            continue
        c = _CONFUSABLES.get(c, c)
        for d in c.casefold():
            d = _CONFUSABLES.get(d, d)
            if not d.isascii():
                digit = unicodedata.decimal(d, None)
                if digit is not None:
                    d = str(digit)  # Arabic-Indic, fullwidth… digits
            out.append(d)
    return "".join(out)


def fold(text: str) -> Folded:
    """The detection copy of ``text`` with its map back to ``text``."""
    if text.isascii():
        n = len(text)
        return Folded(text.lower(), list(range(n)), list(range(1, n + 1)))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        f = _fold_char(ch)
        chars.append(f)
        starts.extend([i] * len(f))
        ends.extend([i + 1] * len(f))
    return Folded("".join(chars), starts, ends)


def canonical(token: str) -> str:
    """Leetspeak undone on a folded token (``sh1t`` -> ``shit``, ``a$$`` ->
    ``ass``), with ``l`` merged into ``i`` (see :data:`LEET`)."""
    return token.translate(_LEET_TABLE)


def runs(word: str) -> tuple[str, tuple[int, ...]]:
    """Run-length split: ``"abccxyyz"`` -> ``("abcxyz", (1, 1, 2, 1, 2, 1))``.

    A text word *stretches* a banned word when both collapse to the same
    letters and every run is at least as long: ``abccxyyz`` and ``asss``
    stretch ``abcxyz`` and ``ass``; ``as`` (runs 1,1) does not stretch ``ass``
    (runs 1,2), so the word "as" stays clean."""
    letters: list[str] = []
    counts: list[int] = []
    for ch in word:
        if letters and letters[-1] == ch:
            counts[-1] += 1
        else:
            letters.append(ch)
            counts.append(1)
    return "".join(letters), tuple(counts)
