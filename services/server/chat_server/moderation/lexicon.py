"""
chat_server.moderation.lexicon
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

The common words of the languages the service's users write, so that the
banned-word matcher never refuses one of them for looking like a banned word
(the Scunthorpe problem, docs/SECURITY.md §4): *assess* is not a stretched
*asses*, *Shiite* not *shite*, *who're* not *whore*, German *aß* not *ass*.

The words come from ``wordfreq`` (word frequencies from many sources): the
:data:`TOP_WORDS` most frequent words of English, German, French and Spanish,
and all of its Hindi list transliterated to Latin letters (``anyascii``), as
Hindi is mostly typed romanised in chat. A word counts only if it is letters
(with ``'`` or ``-`` inside) and has no letter three times in a row, so
stretched forms that made it into the lists (``fuuuuck``) stay suspect.

Memory and time: the set is kept as a sorted array of 64-bit hashes (about
2.7 MB for some 330,000 words). It is built once in a child process (wordfreq
and its lists stay out of the server's memory; about a second) and cached in
``$XDG_CACHE_HOME/chat-server/`` (``~/.cache``), keyed by the wordfreq version,
so later starts read it in milliseconds. If the cache cannot be written, each
process builds its own.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import functools
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from anyascii import anyascii

__all__ = ["LANGUAGES", "TOP_WORDS", "Lexicon", "common_words", "source_words", "word_key"]

#: Languages whose common words are never refused (wordfreq codes).
LANGUAGES = ("en", "de", "fr", "es", "hi")
#: How many of each language's most frequent words count as common.
TOP_WORDS = 100_000
_TRIPLE = re.compile(r"(.)\1\1")


def word_key(text: str) -> str:
    """How a word is looked up: NFKC, case-folded, typographic apostrophe as ``'``."""
    return unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")


def _eligible(key: str) -> bool:
    return (
        bool(key)
        and key[0].isalpha()
        and key[-1].isalpha()
        and all(c.isalpha() or c in "'-" for c in key)
        and _TRIPLE.search(key) is None
    )


def _hash(key: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class Lexicon:
    """A set of words (by :func:`word_key`), stored as sorted 64-bit hashes."""

    def __init__(self, hashes: array.array[int]) -> None:
        self._hashes = hashes

    @classmethod
    def of(cls, words: Iterable[str]) -> Lexicon:
        return cls(array.array("q", sorted({_hash(word_key(w)) for w in words})))

    def to_bytes(self) -> bytes:
        """The hashes as stored in the cache file (``Lexicon(array("q", data))``)."""
        return self._hashes.tobytes()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        h = _hash(word_key(word))
        i = bisect.bisect_left(self._hashes, h)
        return i < len(self._hashes) and self._hashes[i] == h

    def is_common(self, word: str) -> bool:
        """A common word that may excuse a look-alike of a banned word."""
        return _eligible(word_key(word)) and word in self


def source_words(lang: str, top: int = TOP_WORDS) -> list[str]:
    """The words of one language that count (wordfreq; Hindi romanised)."""
    import wordfreq  # heavy: only in the process that builds the lexicon

    words = wordfreq.top_n_list(lang, top)
    if lang == "hi":
        words = [anyascii(w).lower() for w in words]
    return words


def _build() -> bytes:
    words: list[str] = []
    for lang in LANGUAGES:
        words.extend(source_words(lang))
    return Lexicon.of(words).to_bytes()


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        version = importlib.metadata.version("wordfreq")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    name = f"lexicon-wordfreq{version}-{'-'.join(LANGUAGES)}-{TOP_WORDS}-v1.bin"
    return base / "chat-server" / name


@functools.cache
def common_words() -> Lexicon:
    """The process-wide lexicon (read from the cache, or built on first use)."""
    path = _cache_path()
    data = b""
    with contextlib.suppress(OSError):
        data = path.read_bytes()
    if not data or len(data) % 8:
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from chat_server.moderation.lexicon import _build; "
             "sys.stdout.buffer.write(_build())"],
            capture_output=True, check=False,
        )
        if child.returncode != 0 or not child.stdout:
            detail = child.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"cannot build the common-words lexicon: {detail[0]}")
        data = child.stdout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: build again next time
    hashes = array.array("q")
    hashes.frombytes(data)
    return Lexicon(hashes)
