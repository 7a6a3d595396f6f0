"""
chat_server.moderation.banned_words
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

Banned-word matching that is hard to dodge and does not trip over innocent
words (the Scunthorpe problem, docs/SECURITY.md §4).

How a text is matched:

* It is folded (:mod:`.normalize`: look-alikes, NFKD without marks, casefold,
  no format characters) and cut into **tokens**: runs of letters, digits and the
  leet symbols ``@ $ ! | ( < # + €`` (``! | ( <`` at a token's edge are
  punctuation).
* A token is considered only if it has a letter and no more digits than
  letters: ``455`` and ``A55`` (a road) are not ``ass``; ``a55h0le`` is.
* Tokens are compared **whole** (word boundaries), after undoing leetspeak
  (``sh1t``, ``$hit``, ``@ss``, ``fu(k``, ``s#it``, ``8itch``, ``fvck``), so ``classic``, ``assessment``, ``bass``,
  ``assassin`` and ``Scunthorpe`` stay clean with ``ass``/``cunt`` banned. A token
  also matches with non-letters trimmed from its ends (``abcxyz123``).
* A token may **stretch** a banned word: same letters, each run at least as long
  (``abccxyyz``, ``shiiit``; but ``as`` is not ``ass``). ``l`` and ``i`` are one
  letter for matching (``1``, ``|``, ``!`` and a capital ``I`` stand for either),
  but a lower-case ``l`` next to a lower-case ``i`` (or ``L`` next to ``I``) are
  two letters, not a stretch: the names *Shilts* and *Blitch* are not
  *shits* and *bitch*.
* Single letters with the same leet symbol between each (``f|u|c|k``,
  ``f!u!c!k``, ``s+h+i+t``) are read as those letters.
* Tokens are **joined** across punctuation without spaces (``a.b.c.x.y.z``,
  ``abc-xyz``, ``f_u_c_k``), and runs of *single letters* are joined across spaces
  too (``a b c x y z``). Two whole words separated by a space are not joined
  (``abc xyz`` passes): "who re-entered" must not read "whore".
* Entries with several words are **phrases**, matched token by token across any
  separators; their letters run together are also matched as one word
  (``son of a bitch`` -> ``sonofabitch``).
* A line break is a hard boundary: nothing is joined across it.

Cost is linear in the text: one pass of folding and tokenising, set look-ups per
token, and joins that stop as soon as the letters so far are no prefix of a
banned word. There is no per-word regex, so a list of thousands of words costs
the same per character as a list of ten.
"""

from __future__ import annotations

import functools
import os
import re
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .lexicon import common_words
from .normalize import LEET_SYMBOLS, Folded, canonical, fold, leet_readings, prepare_fold, runs

__all__ = ["BannedWords", "WatchedBannedWords", "parse_word_list"]

#: A letter or digit, or a leet symbol (normalize.LEET_SYMBOLS).
_TOKEN_CHAR_CLASS = r"[^\W_]|[" + re.escape(LEET_SYMBOLS) + "]"
_TOKEN = re.compile(f"(?:{_TOKEN_CHAR_CLASS})+")
_SPACE = re.compile(r"\s")
_SPACES_HYPHENS = re.compile(r"[\s\-]+")
_TOKEN_CHAR = re.compile(_TOKEN_CHAR_CLASS)
_EDGE_PUNCT = "!|(<"
#: What may follow a common word after an apostrophe and leave it one.
_CLITICS = frozenset({"s", "d", "m", "ll", "re", "ve"})
#: Joined candidates (across punctuation or spaced letters) stop after a letter
#: repeats this often: bounds the work on "a a a a a …".
_MAX_JOIN_RUN = 4
#: The streaming scan remembers whether a last token may still become a banned
#: word for this many tokens of at most _GROW_CACHE_KEY characters.
_GROW_CACHE_SIZE = 4096
_GROW_CACHE_KEY = 32


class _Token(NamedTuple):
    start: int  # in the folded text
    end: int
    canon: str
    eligible: bool  # has a letter, and no more digits than letters
    single: bool  # exactly one letter
    tight: bool  # joined to the previous token by punctuation only (no space)
    hard: bool  # separated from the previous token by a line break


def _eligible(text: str) -> bool:
    if text.isalpha():
        return True
    letters = digits = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
        elif ch.isdigit():
            digits += 1
    return letters > 0 and digits <= letters


def _tokenize(folded: str) -> list[_Token]:
    tokens: list[_Token] = []
    prev_end = 0
    for m in _TOKEN.finditer(folded):
        s, e = m.span()
        word = m.group()
        stripped = word.strip(_EDGE_PUNCT)
        if not stripped:
            continue
        s += len(word) - len(word.lstrip(_EDGE_PUNCT))
        e = s + len(stripped)
        sep = folded[prev_end:s]
        tokens.append(_Token(
            s,
            e,
            canonical(stripped),
            _eligible(stripped),
            len(stripped) == 1 and stripped.isalpha(),
            bool(tokens) and (not sep or _SPACE.search(sep) is None),
            "\n" in sep,
        ))
        prev_end = e
    return tokens


def _literal(text: str) -> str:
    """A word as written, for comparing with the list: NFKC, lower case (ß
    stays ß), without spaces and hyphens (``son-of-a-bitch``, ``sonofabitch``)."""
    return _SPACES_HYPHENS.sub("", unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'"))


def parse_word_list(text: str) -> list[str]:
    """Entries of a word-list file: one word or phrase per line; ``#`` starts a
    comment; blank lines are ignored."""
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans with those that overlap merged."""
    if not spans:
        return []
    merged = [spans[0]]
    for s, e in spans[1:]:
        ls, le = merged[-1]
        if s < le:
            merged[-1] = (ls, max(le, e))
        else:
            merged.append((s, e))
    return merged


def _alternating(word: str) -> str | None:
    """The letters of ``f|u|c|k``: single letters with one and the same
    symbol between each (a symbol at the end too, for a word still growing);
    None for any other word."""
    if len(word) < 3 or word[1].isalnum():
        return None
    sep = word[1]
    letters = word[0::2]
    if word[1::2].strip(sep) or not letters.isalpha():
        return None
    return letters


def _real_runs(canon: str, raw: str, cases: str) -> tuple[str, tuple[int, ...]]:
    """:func:`runs` of a canonical token, except that a lower-case ``l`` next
    to a lower-case ``i`` (or ``L`` next to ``I``) starts a new run: they are
    two letters as written, although both read ``i`` (``Blitch``). ``raw`` is
    the folded token (``canon`` before leetspeak), ``cases`` per character
    ``u`` (upper case), ``l`` (lower case) or ``-``."""
    letters: list[str] = []
    counts: list[int] = []
    for k, ch in enumerate(canon):
        if letters and letters[-1] == ch and not (
            raw[k] != raw[k - 1] and raw[k] in "il" and raw[k - 1] in "il"
            and cases[k] == cases[k - 1] and cases[k] != "-"
        ):
            counts[-1] += 1
        else:
            letters.append(ch)
            counts.append(1)
    return "".join(letters), tuple(counts)


def _cases(text: str, folded: Folded) -> str:
    """Per character of the folded copy: the case of the character of ``text``
    it came from (see :func:`_real_runs`); only needed where an ``l`` meets an ``i``."""
    ftext = folded.text
    if "li" not in ftext and "il" not in ftext:
        return ""
    def case(ch: str) -> str:
        return "u" if ch.isupper() else "l" if ch.islower() else "-"
    return "".join(case(text[i]) for i in folded.starts)


def _stretches(word: str, target: tuple[str, tuple[int, ...]]) -> bool:
    letters, counts = runs(word)
    return letters == target[0] and all(a >= b for a, b in zip(counts, target[1], strict=True))


class BannedWords:
    """An immutable banned-word matcher. See the module docstring for the rules."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words: dict[str, list[tuple[int, ...]]] = {}  # collapsed letters -> run lengths
        self._prefixes: set[str] = set()
        self._phrase_prefixes: set[str] = set()  # beginnings of a phrase's first word
        self._grows: dict[str, bool] = {}  # _may_grow_into_hit's answers for short tokens
        self._phrases: dict[str, list[tuple[tuple[str, tuple[int, ...]], ...]]] = {}
        self._max_phrase = 0
        self._max_letters = 0
        self.entries: tuple[str, ...] = tuple(words)
        # An entry as written: a hit that is literally one is never excused.
        self._literal = {_literal(e) for e in self.entries}
        self._lexicon = common_words()
        prepare_fold()  # load the look-alike table now, not on the first message
        for entry in self.entries:
            canons = [t.canon for t in _tokenize(fold(entry).text)]
            if not canons:
                continue
            if len(canons) > 1:
                phrase = tuple(runs(c) for c in canons)
                self._phrases.setdefault(phrase[0][0], []).append(phrase)
                first = phrase[0][0]
                self._phrase_prefixes.update(first[:i] for i in range(1, len(first) + 1))
                self._max_phrase = max(self._max_phrase, len(phrase))
            self._add_word("".join(canons))

    def _add_word(self, canon: str) -> None:
        if len(canon) < 2:
            return  # a one-letter "word" would flag every "a" and "I"
        letters, counts = runs(canon)
        self._words.setdefault(letters, []).append(counts)
        self._max_letters = max(self._max_letters, len(letters))
        self._prefixes.update(letters[:i] for i in range(1, len(letters) + 1))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BannedWords:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"banned-words file not found: {os.fspath(path)}") from None
        return cls(parse_word_list(text))

    def __len__(self) -> int:
        return len(self.entries)

    def __reduce__(self) -> tuple[object, tuple[tuple[str, ...]]]:
        # Pickled as its entries (the moderation worker's steps carry it): the
        # receiving process builds each list once (shared_banned_words).
        return shared_banned_words, (self.entries,)

    def snapshot(self) -> BannedWords:
        return self

    # ------------------------------------------------------------------ matching
    def _match(self, canon: str, raw: str = "", cases: str = "") -> bool:
        if cases and ("li" in raw or "il" in raw):
            letters, counts = _real_runs(canon, raw, cases)
        else:
            letters, counts = runs(canon)
        for target in self._words.get(letters, ()):
            if all(a >= b for a, b in zip(counts, target, strict=True)):
                return True
        return False

    def _token_hits(self, folded: str, t: _Token, cases: str = "") -> tuple[int, int] | None:
        word = folded[t.start : t.end]
        if t.eligible and self._match(t.canon, word, cases[t.start : t.end]):
            return t.start, t.end
        spaced = _alternating(word)
        if spaced is not None and self._match(canonical(spaced)):
            return t.start, t.end  # f|u|c|k
        # With non-letters trimmed from the ends: "abcxyz!!", "abcxyz123".
        a = 0
        while a < len(word) and not word[a].isalpha():
            a += 1
        b = len(word)
        while b > a and not word[b - 1].isalpha():
            b -= 1
        if (a or b < len(word)) and b > a:
            core = word[a:b]
            if _eligible(core) and self._match(canonical(core), core, cases[t.start + a : t.start + b]):
                return t.start + a, t.start + b
        return None

    def _join_hits(self, tokens: list[_Token], i: int) -> int | None:
        """Index of the last token of the longest banned join starting at ``i``."""
        acc = tokens[i].canon
        letters, _ = runs(acc)
        if letters not in self._prefixes:
            return None
        last_run = runs(acc)[1][-1]
        found = None
        for j in range(i + 1, len(tokens)):
            t = tokens[j]
            if not t.eligible or t.hard:
                break
            if not t.tight and not (tokens[j - 1].single and t.single):
                break
            for ch in t.canon:
                if ch == letters[-1]:
                    last_run += 1
                else:
                    letters += ch
                    last_run = 1
            if last_run > _MAX_JOIN_RUN or letters not in self._prefixes:
                break
            acc += t.canon
            if letters in self._words and self._match(acc):
                found = j
        return found

    def _phrase_hits(self, tokens: list[_Token], i: int) -> int | None:
        first = tokens[i]
        found = None
        for phrase in self._phrases.get(runs(first.canon)[0], ()):
            if i + len(phrase) > len(tokens):
                continue
            if all(
                (k == 0 or not tokens[i + k].hard)
                and tokens[i + k].eligible
                and _stretches(tokens[i + k].canon, phrase[k])
                for k in range(len(phrase))
            ):
                end = i + len(phrase) - 1
                found = end if found is None else max(found, end)
        return found

    def find(self, text: str) -> list[tuple[int, int]]:
        """Spans ``(start, end)`` of banned words in ``text`` (the original,
        not the folded copy): sorted, merged where they overlap."""
        if not text or not self._words:
            return []
        folded = fold(text)
        hits = self._hits(text, folded, _tokenize(folded.text))
        for reading, _ in leet_readings(text, folded):
            hits.extend(self._hits(text, reading, _tokenize(reading.text)))
        return _merge(sorted(hits))

    def _excused(self, word: str) -> bool:
        """A hit that is a common word of a supported language, and not
        literally a listed entry (``assess``, ``Shiite``, ``who're``, ``aß``).
        The word must look like the common word as well as be it: ``ſuck`` is
        "suck" after NFKC, but its long s looks like an f."""
        if _literal(word) in self._literal:
            return False
        if not self._lexicon.is_common(word):
            # A common word with an English clitic: "assess's", "as's".
            stem, apostrophe, clitic = word.replace("\u2019", "'").rpartition("'")
            if not (apostrophe and clitic.lower() in _CLITICS and _literal(stem) not in self._literal
                    and self._lexicon.is_common(stem)):
                return False
        return word.isascii() or fold(word).text == fold(unicodedata.normalize("NFKC", word)).text

    def _hits(self, text: str, folded: Folded, tokens: list[_Token]) -> list[tuple[int, int]]:
        """Every hit that is not excused, in the original text, sorted."""
        hits: list[tuple[int, int]] = []
        cases = _cases(text, folded)
        for i, t in enumerate(tokens):
            span = self._token_hits(folded.text, t, cases)
            if span is not None:
                hits.append(span)
            if not t.eligible:
                continue
            j = self._join_hits(tokens, i)
            if j is not None:
                hits.append((t.start, tokens[j].end))
            if self._phrases:
                j = self._phrase_hits(tokens, i)
                if j is not None:
                    hits.append((t.start, tokens[j].end))
        if not hits:
            return []
        spans = sorted(folded.original_span(s, e) for s, e in hits)
        return [(s, e) for s, e in spans if not self._excused(text[s:e])]

    def contains(self, text: str) -> bool:
        return bool(self.find(text))

    def mask(self, text: str) -> str:
        """``text`` with each banned word replaced by as many ``*``."""
        parts = []
        pos = 0
        for s, e in self.find(text):
            parts.append(text[pos:s])
            parts.append("*" * (e - s))
            pos = e
        parts.append(text[pos:])
        return "".join(parts)

    # ------------------------------------------------------------------ streaming support
    def scan(self, text: str) -> tuple[list[tuple[int, int]], int]:
        """For a text that may go on (a streaming answer): ``(spans, open_start)``.

        ``spans`` are :meth:`find`'s; what they cover before ``open_start``
        is masked for good, whatever text comes next. From
        ``open_start`` on, a banned word may still be in progress: the last
        token (it may grow), a join of tokens whose letters still begin a
        banned word, or words that still begin a phrase."""
        if not text or not self._words:
            return [], len(text)
        folded = fold(text)
        hits, open_start = self._scan(text, folded, len(text))
        # The leet readings (normalize.leet_readings), each up to where it is settled.
        for reading, end in leet_readings(text, folded, final=False):
            more, more_open = self._scan(text, reading, end)
            hits.extend(more)
            open_start = min(open_start, more_open)
        if len(hits) > 1:
            hits.sort()
        # A hit that reaches past the open start may still change (a phrase
        # whose last word grows out of it): open from its start. So every
        # character before the open start that a span covers is masked for
        # good, whatever follows (also inside a span that goes on past it).
        for s, e in hits:
            if e > open_start:
                open_start = min(open_start, s)
        return _merge(hits), open_start

    def _scan(self, text: str, folded: Folded, end: int) -> tuple[list[tuple[int, int]], int]:
        """:meth:`scan` of one detection copy of ``text`` that reads it up
        to index ``end``: its hits, and its open start (at most ``end``)."""
        ftext = folded.text
        if not ftext:
            return [], end
        tokens = _tokenize(ftext)
        hits = self._hits(text, folded, tokens)
        n = len(ftext)
        open_f = n
        last_open = bool(ftext) and _TOKEN_CHAR.match(ftext, n - 1) is not None
        if last_open:
            # The token touching the end may still grow: from its raw start,
            # unless no banned word or phrase can begin with it however it grows.
            j = n - 1
            while j > 0 and _TOKEN_CHAR.match(ftext, j - 1) is not None:
                j -= 1
            if self._may_grow_into_hit(ftext[j:]):
                open_f = j
        if tokens:
            last = tokens[-1]
            tail_sep = ftext[last.end :]
            # May a token that comes next still join the last one?
            tight_next = last_open or (bool(tail_sep) and not any(c.isspace() for c in tail_sep))
            spaced_next = last.single and "\n" not in tail_sep and all(
                c.isspace() or not c.isalnum() for c in tail_sep
            )
            if last.end == n or tight_next or spaced_next:
                # A live join has at most _MAX_JOIN_RUN tokens per letter of a banned word.
                reach = _MAX_JOIN_RUN * self._max_letters + 1
                for i in range(len(tokens) - 1, max(-1, len(tokens) - 1 - reach), -1):
                    if tokens[i].start >= open_f:
                        continue
                    if self._join_alive(tokens, i, last_open):
                        open_f = min(open_f, tokens[i].start)
            if self._phrases:
                complete = tokens[:-1] if last_open else tokens
                if "\n" not in ftext[complete[-1].end :] if complete else False:
                    start = self._phrase_open(complete)
                    if start is not None:
                        open_f = min(open_f, start)
        open_start = folded.starts[open_f] if open_f < n else end
        return hits, open_start

    def _may_grow_into_hit(self, raw: str) -> bool:
        """:meth:`_grows_into_hit`, remembered for short tokens (the last word
        of a window is asked about on every delta, and words repeat)."""
        known = self._grows.get(raw)
        if known is None:
            known = self._grows_into_hit(raw)
            if len(raw) <= _GROW_CACHE_KEY:
                if len(self._grows) >= _GROW_CACHE_SIZE:
                    self._grows.clear()
                self._grows[raw] = known
        return known

    def _grows_into_hit(self, raw: str) -> bool:
        """May the unfinished token ``raw`` (folded, at the end of the text)
        still become a banned word, or the first word of a phrase, as more
        characters are appended? Only if the letters of one of the forms it
        is compared in (whole, without ``!|`` at its edges, and with the
        non-letters before its first letter trimmed) still begin one. A
        token without a letter yet may become anything."""
        t = raw.lstrip(_EDGE_PUNCT)
        a = 0
        while a < len(t) and not t[a].isalpha():
            a += 1
        if a == len(t):
            return True
        core = t[a:]
        b = len(core)
        while not core[b - 1].isalpha():
            b -= 1
        spaced = _alternating(t)
        for form in dict.fromkeys((t, t.rstrip(_EDGE_PUNCT), core, core[:b], spaced or core)):
            letters = runs(canonical(form))[0]
            if letters in self._prefixes or letters in self._phrase_prefixes:
                return True
        return False

    def _join_alive(self, tokens: list[_Token], i: int, last_open: bool = False) -> bool:
        """Does the join starting at token ``i`` reach the last token with its
        letters still the beginning of a banned word? ``last_open``: the last
        token touches the end and may still grow, so it may still become
        eligible (``$`` of ``a.$s``)."""
        t0 = tokens[i]
        if not t0.eligible:
            return False
        letters, counts = runs(t0.canon)
        if letters not in self._prefixes:
            return False
        last_run = counts[-1]
        last = len(tokens) - 1
        for j in range(i + 1, len(tokens)):
            t = tokens[j]
            if (not t.eligible and not (last_open and j == last)) or t.hard:
                return False
            if not t.tight and not (tokens[j - 1].single and t.single):
                return False
            for ch in t.canon:
                if ch == letters[-1]:
                    last_run += 1
                else:
                    letters += ch
                    last_run = 1
            if last_run > _MAX_JOIN_RUN or letters not in self._prefixes:
                return False
        return True

    def _phrase_open(self, tokens: list[_Token]) -> int | None:
        """Start of the earliest run of final tokens that is a proper
        beginning of a phrase, or None."""
        tail: list[_Token] = []
        for t in reversed(tokens):
            if not t.eligible or len(tail) >= self._max_phrase - 1:
                break
            tail.append(t)
            if t.hard:
                break
        tail.reverse()
        for j in range(len(tail), 0, -1):
            seq = tail[-j:]
            for phrase in self._phrases.get(runs(seq[0].canon)[0], ()):
                if len(phrase) > j and all(
                    _stretches(t.canon, p) for t, p in zip(seq, phrase, strict=False)
                ):
                    return seq[0].start
        return None


@functools.lru_cache(maxsize=4)
def shared_banned_words(entries: tuple[str, ...]) -> BannedWords:
    """One :class:`BannedWords` per list in this process (what an unpickled one is)."""
    return BannedWords(entries)


class WatchedBannedWords:
    """A :class:`BannedWords` read from ``path`` that follows the file.

    Each call checks (at most every ``min_interval`` seconds) the file's
    ``(mtime_ns, size)`` and re-reads it when they change, so operators edit the
    list without a restart. If the file is missing or unreadable at a reload the
    previous list stays in force and :attr:`last_error` says why; at
    construction a missing file raises :exc:`FileNotFoundError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, min_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.min_interval = min_interval
        self.last_error: str | None = None
        self.reloads = 0
        try:
            stamp = self._stamp()
        except FileNotFoundError:
            raise FileNotFoundError(f"banned-words file not found: {self.path}") from None
        self._current = BannedWords.from_file(self.path)
        self._loaded_stamp = stamp
        self._checked_at = time.monotonic()

    def _stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.min_interval:
            return
        self._checked_at = now
        try:
            stamp = self._stamp()
            if stamp == self._loaded_stamp:
                return
            words = BannedWords(parse_word_list(self.path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            self.last_error = f"cannot reload {self.path}: {exc}"
            return
        self._current = words
        self._loaded_stamp = stamp
        self.last_error = None
        self.reloads += 1

    def snapshot(self) -> BannedWords:
        """The list in force now (checking the file first); it never changes."""
        self._refresh()
        return self._current

    def __len__(self) -> int:
        return len(self.snapshot())

    def find(self, text: str) -> list[tuple[int, int]]:
        return self.snapshot().find(text)

    def contains(self, text: str) -> bool:
        return self.snapshot().contains(text)

    def mask(self, text: str) -> str:
        return self.snapshot().mask(text)
