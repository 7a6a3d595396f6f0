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
    "LEET", "LEET_SYMBOLS", "MULTI_LEET", "SCRIPT_LEET", "Folded", "canonical", "displayed_reading", "fold",
    "leet_readings", "model_reading", "prepare_fold", "runs",
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


# --------------------------------------------------------------------------- leet readings
#: Letters written with several characters, from the public leet alphabets
#: (docs/SECURITY.md §4). Read on the detection copy (lower case), longest
#: first, in a reading of their own (:func:`leet_readings`): the plain copy
#: still reads each character on its own (``vv`` as "uu", ``|`` as "i"), and
#: a word is banned if either reading finds it. Left out: digit pairs (``13``
#: b, ``12`` r: numbers), ``nn`` and ``^^`` for m ("funny", "x^^"), ``cl``
#: for d ("clock").
MULTI_LEET = {
    # four characters
    "|\\/|": "m", "/\\/\\": "m", "\\/\\/": "w", "|/\\|": "w",
    # three characters
    "|-|": "h", "]-[": "h", "}-{": "h", ")-(": "h", "(-)": "h", "[-]": "h", "|~|": "h",
    "|_|": "u", "(_)": "u", "[_]": "u", "\\_/": "u", "\\_\\": "u",
    "|\\|": "n", "/\\/": "n", "[\\]": "n", "{\\}": "n", "<\\>": "n",
    "/v\\": "m", "|v|": "m", "[v]": "m", "(v)": "m", "]v[": "m",
    "/-\\": "a", "\\^/": "w", "-|-": "t",
    # two characters
    "|<": "k", "|{": "k", "]<": "k", "/<": "k", "|(": "k", "l<": "k",
    "ph": "f", "|=": "f",
    "}{": "h",
    "vv": "w",
    "()": "o", "[]": "o", "<>": "o",
    "/\\": "a",
    "\\/": "v",
    "><": "x", ")(": "x",
    "|)": "d", "[)": "d", "|]": "d",
    "|3": "b", "|8": "b", "]3": "b",
    "|2": "r",
    "|_": "l",
    "|*": "p",
}
_MULTI_MAX = max(map(len, MULTI_LEET))
_MULTI_RE = regex.compile("|".join(regex.escape(k) for k in sorted(MULTI_LEET, key=len, reverse=True)))
_MULTI_FIRST = frozenset(k[0] for k in MULTI_LEET)
#: Prefixes of the sequences (a sequence may still be completed by what comes next).
_MULTI_PREFIXES = frozenset(k[:i] for k in MULTI_LEET for i in range(1, len(k)))
#: Letters of other scripts that leet uses for Latin ones (Cyrillic ``к я ш
#: и п ф д ж ц ч ь``, Greek ``β θ π φ ψ ω Σ``), by the character as written
#: (case-folded; ``Σ`` is an e, ``σ`` an o). Read only inside a word that mixes
#: them with Latin letters (``шank``, ``fu¢к``): a word written wholly in
#: Cyrillic or Greek is a word of that language ("майк" is not read).
SCRIPT_LEET = {
    "д": "a", "б": "b", "ъ": "b", "ь": "b", "в": "b", "ж": "x", "к": "k", "и": "n", "й": "n", "п": "n",
    "л": "n", "м": "m", "ц": "u", "ч": "y", "ш": "w", "щ": "w", "э": "e", "є": "e", "я": "r", "ґ": "r",
    "ф": "f", "г": "r", "з": "e",
    "β": "b", "θ": "o", "π": "n", "φ": "f", "ψ": "w", "ω": "w", "μ": "u", "η": "n", "κ": "k",
    "δ": "d", "γ": "y", "ε": "e", "υ": "u", "λ": "a", "ξ": "e", "ς": "s", "τ": "t",
}
#: Upper-case forms that read differently from their lower case (``Σ`` e).
_SCRIPT_LEET_UPPER = {"Σ": "e", "Π": "n", "Δ": "a", "Λ": "a", "Ш": "w", "И": "n", "Я": "r"}
#: ``и`` (and ``й``) is also read as a u (italic и looks like one): a second reading.
_SCRIPT_LEET_U = {"и": "u", "й": "u", "И": "u", "Й": "u"}
_OTHER_SCRIPT = regex.compile(r"[\p{Script=Cyrillic}\p{Script=Greek}]")
_LATIN_LETTER = regex.compile(r"\p{Script=Latin}")
_WORD_RUN = regex.compile(r"(?:[^\W_]|[" + regex.escape(LEET_SYMBOLS) + "])+")


def _script_leet(ch: str, u_reading: bool) -> str | None:
    if u_reading and ch in _SCRIPT_LEET_U:
        return _SCRIPT_LEET_U[ch]
    return _SCRIPT_LEET_UPPER.get(ch) or SCRIPT_LEET.get(ch.casefold())


def leet_readings(text: str, folded: Folded, final: bool = True) -> list[tuple[Folded, int]]:
    """Further detection copies of ``text`` (``folded`` is :func:`fold`'s)
    that read multi-character leet (:data:`MULTI_LEET`: ``|<`` k, ``ph`` f,
    ``|-|`` h, ``vv`` w, ``()`` o, ``|_|`` u, ``/\\`` a…) and, inside a
    word that mixes Latin letters with Cyrillic or Greek ones, those scripts'
    leet letters (:data:`SCRIPT_LEET`); none where neither occurs. A second
    copy reads ``и`` as u where it is read at all.

    Each comes with the index of ``text`` it reads up to: ``len(text)``,
    except for a text that may go on (``final`` false), where the copy stops
    before the first place that more text could still read differently (a
    sequence still incomplete, ``|`` before ``<``; a last word not mixed
    yet). Up to there, the copy is the beginning of the copy of any longer
    text, so a streaming scan of it is exact. Linear in the text."""
    ftext = folded.text
    n = len(ftext)
    needs_multi = any(c in _MULTI_FIRST for c in ftext) if n < 64 else bool(_MULTI_FIRST & set(ftext))
    needs_script = not text.isascii() and _OTHER_SCRIPT.search(text) is not None
    if not needs_multi and not needs_script:
        return []
    # 1. Multi-character sequences, longest first, left to right.
    stop = n  # first folded index whose reading is not settled
    matches = list(_MULTI_RE.finditer(ftext)) if needs_multi else []
    if not final and needs_multi:
        # Near the end a sequence may still be completed ("|" + "<"): from the
        # first place where what is left begins one, nothing is settled.
        x = max(0, n - _MULTI_MAX + 1)
        for found in reversed(matches):
            if found.start() < x:
                x = max(x, found.end())
                break
        starts_at = {found.start(): found.end() for found in matches if found.start() >= x}
        while x < n:
            if ftext[x:] in _MULTI_PREFIXES:
                stop = x
                break
            x = starts_at.get(x, x + 1)
        matches = [found for found in matches if found.start() < stop]
    changed = bool(matches)
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for found in matches:
        s, e = found.span()
        chars.append(ftext[pos:s])
        starts.extend(folded.starts[pos:s])
        ends.extend(folded.ends[pos:s])
        chars.append(MULTI_LEET[found.group()])
        starts.append(folded.starts[s])
        ends.append(folded.ends[e - 1])
        pos = e
    chars.append(ftext[pos:stop])
    starts.extend(folded.starts[pos:stop])
    ends.extend(folded.ends[pos:stop])
    end = folded.starts[stop] if stop < n else len(text)
    multi = Folded("".join(chars), starts, ends)
    if not needs_script:
        return [(multi, end)] if changed or end < len(text) else []
    # 2. Leet letters of other scripts inside mixed words.
    mtext = multi.text
    m = len(mtext)
    words = [w.span() for w in _WORD_RUN.finditer(mtext) if _OTHER_SCRIPT.search(text, multi.starts[w.start()],
                                                                                  multi.ends[w.end() - 1])]
    readings = []
    for u_reading in (False, True):
        out: list[str] = []
        o_starts: list[int] = []
        o_ends: list[int] = []
        word_stop = m
        any_u = False
        pos = 0
        for i, j in words:
            origs = {multi.starts[k] for k in range(i, j) if multi.ends[k] - multi.starts[k] == 1}
            latin = any(_LATIN_LETTER.match(text[o]) for o in origs)
            mapped = {o for o in origs if _script_leet(text[o], u_reading) is not None
                      and _OTHER_SCRIPT.match(text[o])}
            if u_reading:
                any_u = any_u or any(text[o] in _SCRIPT_LEET_U for o in mapped)
            if j == m and not final and not latin and mapped:
                # The last word may still become mixed: not settled from its first such letter.
                word_stop = min(k for k in range(i, j) if multi.starts[k] in mapped)
                break
            if not (latin and mapped):
                continue
            out.append(mtext[pos:i])
            o_starts.extend(multi.starts[pos:i])
            o_ends.extend(multi.ends[pos:i])
            k = i
            while k < j:
                o = multi.starts[k]
                if o in mapped and multi.ends[k] - o == 1:
                    out.append(_script_leet(text[o], u_reading) or "")
                    o_starts.append(o)
                    o_ends.append(o + 1)
                    changed = True
                    k += 1
                    while k < j and multi.starts[k] == o:
                        k += 1  # the rest of that character's fold (Ы is "bl")
                    continue
                out.append(mtext[k])
                o_starts.append(o)
                o_ends.append(multi.ends[k])
                k += 1
            pos = j
        out.append(mtext[pos:word_stop])
        o_starts.extend(multi.starts[pos:word_stop])
        o_ends.extend(multi.ends[pos:word_stop])
        end_r = multi.starts[word_stop] if word_stop < m else end
        if u_reading and not any_u:
            break
        readings.append((Folded("".join(out), o_starts, o_ends), end_r))
    if not changed and all(e == len(text) for _, e in readings):
        return []
    return readings
