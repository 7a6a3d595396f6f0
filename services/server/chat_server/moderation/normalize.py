"""
chat_server.moderation.normalize
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Turns text into the *detection copy* the banned-word matcher works on, and
back (docs/SECURITY.md §4). Per character:

1. Invisible and filler characters count as nothing: every Unicode
   *Default_Ignorable_Code_Point* (zero-width space, soft hyphen, word joiner,
   bidi controls, Hangul fillers, variation selectors, tag characters, BOM…)
   is dropped; the blank Braille pattern (U+2800) reads as a space. (What a
   language model reads in tag characters is checked on messages separately:
   ``worker.check_message``.)
2. Look-alikes first: Unicode's confusables data (UTS #39, the table behind its
   "skeletons", as shipped by the ``confusable_homoglyphs`` package) gives, for
   a character that looks like an ASCII letter or digit, that character:
   Cyrillic ``ѕ а о Н``, Greek ``ν ρ Κ ϲ``, Armenian ``օ ս``, Cherokee ``Ꭺ``,
   Lisu ``ꓝ``, long ``ſ`` (an ``f``, although NFKD makes it an ``s``), the
   ogonek ``˛`` (an ``i``)… The character as written is looked up before
   any decomposition, so a compatibility mapping that changes what it looks
   like does not hide it.
3. Otherwise NFKD, then combining marks (category M) dropped: fullwidth ``ＡＢＣ``,
   mathematical ``𝐟``, circled ``ⓕ``, ligatures and accents fold to plain
   letters (``fück`` -> ``fuck``), zalgo marks vanish; each part of the
   decomposition is looked up in the confusables again. Latin-script letter
   forms and letter symbols the table leaves out (small capitals ``ꜰ ᴋ ʀ``,
   enclosed ``🅕 🅤``, regional indicators ``🇫``) are transliterated
   (``anyascii``); other scripts are not, so real Cyrillic, Greek or
   Devanagari words are not read as English.
4. ``str.casefold()``, except that ``ß`` stays ``ß`` (German *aß* is not *ass*).

The copy is only for detection (UTS #39: a skeleton must never be displayed);
each of its characters remembers the span of the original it came from, so
matches map back to the caller's text. Everything is per character, hence
``fold(a + b) == fold(a) + fold(b)``: the streaming answer filter relies on it.

Leetspeak is handled later, per token, by :func:`canonical`.

Two other readings of a message are made here too, because they are about how
text is read rather than what it says: :func:`model_reading` (tag characters as
the ASCII a language model reads in them) and :func:`displayed_reading` (the
order a right-to-left override shows letters in). The worker checks a message
in each reading (``worker.check_message``).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import unicodedata
from dataclasses import dataclass

import regex
from anyascii import anyascii

__all__ = [
    "LEET", "LEET_SYMBOLS", "Folded", "canonical", "displayed_reading", "fold", "model_reading",
    "prepare_fold", "runs",
]

_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")
_LATIN_OR_COMMON = regex.compile(r"[\p{Script=Latin}\p{Script=Common}]")
_BLANKS = frozenset("\u2800")


@functools.cache
def _prototypes() -> dict[str, str]:
    """Character -> the ASCII letter or digit it looks like, from the
    confusables data (loaded once, then only this small map is kept)."""
    data = json.loads(
        importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    out: dict[str, str] = {}
    for ch, homoglyphs in data.items():
        if ch.isascii() or len(ch) != 1:
            continue
        glyphs = [h["c"] for h in homoglyphs]
        letters = [g for g in glyphs if g.isascii() and g.isalpha()]
        digits = [g for g in glyphs if g.isascii() and g.isdigit()]
        if letters or digits:
            out[ch] = (letters or digits)[0]
            continue
        if _LATIN_OR_COMMON.match(ch):
            continue  # transliterated in _fold_char (ᴋ is k, not like its look-alike ĸ)
        # One step further: a Latin look-alike of a look-alike (Greek κ ~ ᴋ ~ k).
        for g in glyphs:
            if len(g) == 1 and not g.isascii() and _LATIN_OR_COMMON.match(g) and g not in "ĸ":
                t = anyascii(g)
                if len(t) == 1 and t.isalpha():
                    out[ch] = t
                    break
    return out

#: Leetspeak, applied to tokens. "1" and "!" stand for "i" or "l": canonical
#: forms merge "l" into "i" on *both* sides (list and text), so one lookup
#: covers both readings.
LEET = {
    "@": "a", "4": "a", "8": "b", "(": "c", "<": "c", "3": "e", "€": "e", "#": "h",
    "1": "i", "!": "i", "|": "i", "l": "i", "0": "o", "$": "s", "5": "s", "7": "t",
    "+": "t", "v": "u",
    # From the public leet alphabets: symbols (cent, copyright, section, dagger,
    # registered, degree), digits (6 b, 9 g), and the Greek kappa and eta the
    # confusables data does not give as k and n. Not the Cyrillic ones (ка,
    # пе, ша…): the fold already reads many Cyrillic letters as Latin ones,
    # and with more, real Russian words read as English ("майк" as "wank").
    "¢": "c", "©": "c", "§": "s", "†": "t", "®": "r", "°": "o", "6": "b", "9": "g",
    "κ": "k", "η": "n",
}
#: The leet symbols that are not letters or digits: they are part of a token
#: (``fu(k``, ``s#it``, ``shi+``), except ``!|(<`` at a token's edges,
#: where they are punctuation (``(word``, ``wow!``).
LEET_SYMBOLS = "@$!|(<#+€¢©§†®°"
_LEET_TABLE = str.maketrans(LEET)


@dataclass(frozen=True, slots=True)
class Folded:
    """The detection copy: ``text[i]`` came from ``original[starts[i]:ends[i]]``."""

    text: str
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


def prepare_fold() -> None:
    """Load the look-alike table (a fraction of a second, once per process)."""
    _prototypes()


@functools.lru_cache(maxsize=16384)
def _fold_char(ch: str) -> str:
    if ch.isascii():
        return ch.lower()
    if _IGNORABLE.match(ch):
        return ""
    if ch in _BLANKS:
        return " "
    if ch in "ßẞ":
        return "ß"
    protos = _prototypes()
    p = protos.get(ch)
    if p is not None:
        return p.casefold()  # looks like an ASCII letter or digit as written
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        if unicodedata.category(c)[0] == "M" or _IGNORABLE.match(c):
            continue
        if not c.isascii():
            digit = unicodedata.decimal(c, None)
            if digit is not None:
                out.append(str(digit))  # Arabic-Indic, Devanagari… digits
                continue
            p = protos.get(c)
            if p is None and _LATIN_OR_COMMON.match(c) and unicodedata.category(c) in ("Ll", "Lu", "Lt", "Lm", "So"):
                t = anyascii(c)
                if len(t) == 1 and t.isalpha():
                    p = t
            if p is not None:
                c = p
        out.append(c.casefold() if c not in "ßẞ" else "ß")
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
        f = ch.lower() if ch.isascii() else _fold_char(ch)
        chars.append(f)
        starts.extend([i] * len(f))
        ends.extend([i + 1] * len(f))
    return Folded("".join(chars), starts, ends)


def canonical(token: str) -> str:
    """Leetspeak undone on a folded token (``sh1t`` -> ``shit``, ``a$$`` ->
    ``ass``), with ``l`` merged into ``i`` (see :data:`LEET`)."""
    return token.translate(_LEET_TABLE)


#: Words up to this long are remembered by :func:`runs`; longer ones (a
#: megabyte "word" of a hostile message) would keep the cache's memory for ever.
RUNS_CACHE_KEY = 64


def runs(word: str) -> tuple[str, tuple[int, ...]]:
    """Run-length split: ``"abccxyyz"`` -> ``("abcxyz", (1, 1, 2, 1, 2, 1))``.

    A text word *stretches* a banned word when both collapse to the same
    letters and every run is at least as long: ``abccxyyz`` and ``asss``
    stretch ``abcxyz`` and ``ass``; ``as`` (runs 1,1) does not stretch ``ass``
    (runs 1,2), so the word "as" stays clean."""
    return _runs_cached(word) if len(word) <= RUNS_CACHE_KEY else _runs(word)


@functools.lru_cache(maxsize=8192)
def _runs_cached(word: str) -> tuple[str, tuple[int, ...]]:
    return _runs(word)


def _runs(word: str) -> tuple[str, tuple[int, ...]]:
    letters: list[str] = []
    counts: list[int] = []
    for ch in word:
        if letters and letters[-1] == ch:
            counts[-1] += 1
        else:
            letters.append(ch)
            counts.append(1)
    return "".join(letters), tuple(counts)


# --------------------------------------------------------------------------- readings
_TAGS = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
_ENDS_OVERRIDE = frozenset("\u202c\u2069\n\r\u2029")


def displayed_reading(text: str) -> str | None:
    """``text`` as a bidi-aware display shows it where a right-to-left
    override (U+202E) reverses what follows it, up to its PDF (U+202C), a PDI
    or the end of the line ("\u202ekcuf" is seen as the banned word); None
    when it has none. Nesting is not modelled: a segment ends at the first end."""
    if "\u202e" not in text:
        return None
    out: list[str] = []
    segment: list[str] | None = None
    for ch in text:
        if segment is None:
            if ch == "\u202e":
                segment = []
            else:
                out.append(ch)
        elif ch in _ENDS_OVERRIDE:
            out.extend(reversed(segment))
            out.append(ch)
            segment = None
        else:
            segment.append(ch)
    if segment is not None:
        out.extend(reversed(segment))
    return "".join(out)


def model_reading(text: str) -> str | None:
    """``text`` with its tag characters read as the ASCII they encode (what a
    language model sees), or None when it has none."""
    if text.isascii():
        return None
    decoded = text.translate(_TAGS)
    return decoded if decoded != text else None
