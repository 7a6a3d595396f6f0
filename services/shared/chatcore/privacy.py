"""
chatcore.privacy
~~~~~~~~~~~~~~~~

Finds e-mail addresses and phone numbers in free text. The server uses it to
refuse messages and to mask the model's answer (also while it streams); the
client uses it to refuse before anything is sent. It carries the original
client's two notices. What counts (pinned by tests/privacy/test_privacy.py):

* **Folding first.** Every detector works on a folded copy that remembers, per
  character, where it came from, so findings index the caller's text. Per
  character: invisible and filler characters (Unicode *Default_Ignorable_Code_Point*:
  zero-width space, soft hyphen, Hangul fillers, variation selectors, tags…)
  and combining marks that decorate any character (keycap ``9️⃣``, underline
  ``9̲``, enclosing circle; the generic combining blocks) are dropped; NFKC
  (fullwidth, superscripts, circled ``①``); every digit form becomes an ASCII
  digit (Arabic-Indic ``٩``, enclosed ``❾ ⓽ ⓿ 🄋``, CJK numerals ``〇一二…九``);
  dashes and minus signs become ``-``; ideographic and other full stops
  (``。 ｡ ﹒``), middle dots and dot operators (``· ∙ ⋅ ・``) become ``.``; the
  heavy plus ``➕`` is ``+``; a circled ``ⓐ`` is ``@``. Folding is per
  character, so the fold of a concatenation is the concatenation of the folds.
  A finding's span takes the characters after it that fold to nothing (a
  keycap's), so a mask leaves none of them behind. :func:`structural_ascii`
  writes what the fold reads as ``@ . - +`` or a digit as that ASCII
  character: the server applies it before transliterating an answer for the
  original client, so the ASCII it masks keeps what the detectors saw.
* **Phones** are found by a linear scan for *runs*: digit groups joined by at
  most four separator characters (space, ``- . / ( ) [ ] _ ~ | : * ' \\``, and
  at most one line break; not a comma), optionally led by ``+`` or ``(``,
  on a copy where HTML, percent and backslash escapes of digits and
  separators are read back (``&#57;``, ``&nbsp;``, ``%39``, ``\\u0039``).
  A *run-word* is a stretch of a run without a space; numbers start and end
  at whole run-words. Inside a
  run, numbers are chosen greedily from the left: at each run-word, the
  longest window of whole run-words with at most :data:`MAX_PHONE_DIGITS`
  digits that libphonenumber (``phonenumbers``) calls valid, and reportable:

  - written internationally (``+44 …``, ``0044 …``, ``011 44 …``): valid for its country;
  - written nationally for one of the configured regions (``CHAT_PHONE_REGIONS``,
    default :data:`DEFAULT_REGIONS`), valid for that region, with at least as
    many significant digits as the region's shortest mobile number (10 in
    India, 9 in Spain; so ``0535096``, a valid but short German number, is
    just a number) and written the way the region writes it: with the trunk
    prefix (``020 7946 0958``, ``011-2345 6789``), or without it for a mobile
    number where the region's format does not require the prefix
    (libphonenumber's formatting rules, as its matcher's *VALID* leniency
    checks them: India's ``98765 43210`` and all of North America's
    ``(212) 736-5000`` count, France's ``612345678`` does not). Shorter
    numbers with their prefix, and landlines of regions without a prefix,
    count when the text groups the digits exactly as the region's national
    format does (``030 123456``, Spain's ``810 12 34 56``).

  A fixed-line number written without its trunk prefix (``1234567890``) is not
  reported: it is indistinguishable from ids. Digits that belong to something
  else are never a phone number:

  - an *identifier*: a code word (letters, digits and ``_-./:+#=~&%``) with a
    letter glued to a digit, directly or by ``-``/``_`` (``0535096e``, UUIDs,
    hashes, ``v1.2``, ``INV-2041``, ``call me9876543210``), or letters with
    ``/ = _ # & ~`` (URLs, ``id=…``);
  - digits glued to a Latin letter, ``_``, ``%``, ``#`` or a currency sign
    (libphonenumber's rule for ``abc8005001234``), or after a currency sign or
    code and one space (``Rs. 3242000000``); hours and minutes (``12:30``);
    digits after a comma between digits (``1,234``);
  - a run-word shaped like a date (``2026-12-01``, ``01.12.2026``,
    ``20261201``), an IPv4 address or network, a decimal number
    (``0.8414709848``), or a version or part number whose later groups include
    a single digit (``10.0.19041``, ``978-3-16-148410-0``; but not after a
    ``+`` and a country code: ``+91 9-8-7-6-5-4-3-2-1-0``); groups joined by
    dots alone count only when grouped exactly as a national format
    (``212.736.5000``, ``06.12.34.56.78``);
  - brackets that do not pair up (``arr[3632][10]``);
  - terms of a list of numbers (``1 2 3 4 5 6 7 8 9 10``, squares, primes,
    ``2020 2021 2022 2023 2024``; :func:`_list_ends` gives the rule).

  tests/privacy/test_phone_false_positives.py states these as properties
  over generated UUIDs, tokens, dates, addresses, versions and amounts.
  Because each decision looks at most :data:`MAX_PHONE_DIGITS` digits ahead,
  and what follows a run only matters up to the end of its code word, a
  streaming caller can settle everything but the last few groups of a long
  run (see :meth:`PersonalDataDetector.scan`).
* **E-mails** are found by scanning outward from each ``@`` (local part at most
  64 characters of letters, digits and RFC 5322's ``. # $ % & ' + - / = ^ _ ~``,
  so ``o'brien@…`` is masked whole; domain at most 253, a dot and a final label
  of two or more letters), after the common obfuscations are read back:
  ``at``/``@`` between brackets, quotes or marks (``[at] (at) {at} <at> <<at>>
  «at» "at" 'at' “at” *at* #at# [@] (@)``) and ``at``, ``at the rate (of)``,
  ``atrate`` (Indian English), ``arroba`` (Spanish), ``arobase`` (French) as
  words for ``@``; ``@@`` and ``@ @``; the same brackets around ``dot`` or
  ``.``, and ``dot``, ``punto``, ``Punkt`` as words or ``-dot-``/``_dot_`` for
  ``.`` (not ``point``: "at that point in time" would read as an address);
  spaces or one line break around ``@``, spaces around a ``.`` with spaces on
  both sides; HTML character references, also escaped twice (``&#64;``,
  ``&commat;``, ``&#x2e;``, ``&amp;#64;``), percent escapes, also of ``%``
  (``%40``, ``%2E``, ``%2540``), quoted-printable (``=40``, ``=2E``) and
  backslash escapes (``\u0040``, ``\x40``). Letters or digits spaced out
  one space apart are read as one word (``j o h n @ e x a m p l e . c o m``).
  Where the ``@`` is a bare word (``at``, ``arroba``), the domain must not
  begin with a word that follows "at" in prose or with a one- or two-digit
  number ("meet at 5 dot com", "look at this dot net" are no addresses).

Every pass is linear in the input (docs/SECURITY.md §3 measured a quadratic
e-mail regex): bounded regular expressions without nested quantifiers, an outward scan per ``@`` over disjoint ranges, and a bounded
number of libphonenumber checks per digit group (memoised).
"""

from __future__ import annotations

import functools
import html
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import phonenumbers
import regex
from anyascii import anyascii
from phonenumbers import PhoneMetadata, PhoneNumberType

__all__ = [
    "DEFAULT_REGIONS",
    "EMAIL_MASK",
    "EMAIL_NOTICE",
    "MAX_PHONE_DIGITS",
    "PHONE_MASK",
    "PHONE_NOTICE",
    "PersonalData",
    "PersonalDataDetector",
    "Scan",
    "detector_for",
    "find_personal_data",
    "mask_personal_data",
    "parse_regions",
    "refusal_notice",
    "structural_ascii",
]

EMAIL_NOTICE = "you are not allowed to share email address with the chat help"
PHONE_NOTICE = "you are not allowed to share phone number with the chat help"

EMAIL_MASK = "[email removed]"
PHONE_MASK = "[phone removed]"

#: Regions whose national formats count when ``CHAT_PHONE_REGIONS`` is unset:
#: India first (the service's home), then the largest English-, German-,
#: French- and Spanish-speaking numbering plans our users write from.
DEFAULT_REGIONS: tuple[str, ...] = ("IN", "US", "CA", "GB", "AU", "DE", "FR", "ES")

#: The most digits one phone number may have as written: 15 (E.164) plus an
#: international prefix ("00", "011") or a trunk prefix in brackets.
MAX_PHONE_DIGITS = 17
_MIN_PHONE_DIGITS = 7
#: RFC 5321 limits.
_MAX_LOCAL = 64
_MAX_DOMAIN = 253

Kind = Literal["email", "phone"]


@dataclass(frozen=True, slots=True)
class PersonalData:
    """One finding: ``text == original[start:end]``."""

    kind: Kind
    start: int
    end: int
    text: str


# --------------------------------------------------------------------------- folding
class _Mapped:
    """A derived string plus, for each of its characters, the span of the
    original text it came from. Spans of matches in the derived string map back
    with ``(starts[s], ends[e - 1])``, whatever was inserted or expanded."""

    __slots__ = ("ends", "starts", "text")

    def __init__(self, text: str, starts: list[int], ends: list[int]) -> None:
        self.text = text
        self.starts = starts
        self.ends = ends

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]

    def finding_span(self, start: int, end: int, length: int) -> tuple[int, int]:
        """:meth:`original_span`, with what follows it and folds to nothing
        (the ``U+FE0F U+20E3`` of a keycap ``0️⃣``, an underline): a mask
        leaves none of it behind. ``length``: the original's."""
        s, e = self.starts[start], self.ends[end - 1]
        nxt = self.starts[end] if end < len(self.text) else length
        return s, max(e, nxt) if nxt - e <= _MAX_TRAILING_MARKS else e

    def original_index(self, i: int, length: int) -> int:
        """The original index of derived position ``i`` (``length`` at the end)."""
        return self.starts[i] if i < len(self.text) else length

    def sub(self, pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str]) -> _Mapped:
        """Replace every match; a replacement maps to the whole original span
        of its match. ``repl`` may return the match's own text to keep it."""
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0
        changed = False
        for m in pattern.finditer(self.text):
            s, e = m.span()
            r = repl if isinstance(repl, str) else repl(m)
            if r == m.group() or s == e:
                continue
            changed = True
            chars.append(self.text[pos:s])
            starts.extend(self.starts[pos:s])
            ends.extend(self.ends[pos:s])
            chars.append(r)
            starts.extend([self.starts[s]] * len(r))
            ends.extend([self.ends[e - 1]] * len(r))
            pos = e
        if not changed:
            return self
        chars.append(self.text[pos:])
        starts.extend(self.starts[pos:])
        ends.extend(self.ends[pos:])
        return _Mapped("".join(chars), starts, ends)


_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")
#: At most this many characters that fold to nothing are added to the end of
#: a finding (a keycap's two; more is decoration, not part of the number).
_MAX_TRAILING_MARKS = 4
_FULL_STOPS = frozenset("\u3002\uff61\ufe12\ufe52\u2024")
#: Combining marks that decorate any character (keycaps, circles, underlines,
#: accents from the generic blocks): nothing, so ``9️⃣`` and ``9̲`` are digits.
#: Script-specific marks (Devanagari vowel signs…) stay: they are letters' parts.
_GENERIC_MARKS = regex.compile(
    r"[\p{Me}\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
#: Characters written between the parts of an address or a number the way a
#: full stop, a hyphen or a plus is, but that NFKC leaves alone: middle dots
#: and dot operators (not the bullet "•", which starts list items); minus
#: signs (not Unicode dashes); the heavy plus.
_LIKE = {
    **dict.fromkeys("\u00b7\u2219\u22c5\u2027\u30fb\uff65\u2e31", "."),
    **dict.fromkeys("\u2212\u2796\u02d7\u207b\u208b\u2043", "-"),
    "\u2795": "+",
    "\u24b6": "@", "\u24d0": "@",  # circled a, written for "@"
    # Separators between digit groups NFKC leaves alone: bullets (one "•"),
    # star operators ("*"), vertical bars and box-drawing lines ("|"), division
    # and fraction slashes, set minus ("/" and "\\"), the ratio colon (":"),
    # line and paragraph separators (a line break).
    **dict.fromkeys("\u2022\u2023\u25e6\u204c\u204d\u2218", "\u2022"),
    **dict.fromkeys("\u2217\u22c6\u2731\u2732\u204e", "*"),
    **dict.fromkeys("\u2502\u2503\u2223\u00a6\u2758\u23d0\u2551", "|"),
    **dict.fromkeys("\u2044\u2215\u29f8", "/"),
    **dict.fromkeys("\u2216\u29f5\u29f9", "\\"),
    **dict.fromkeys("\u2236\ua789", ":"),
    **dict.fromkeys("\u2028\u2029\x85", "\n"),
}


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    if _IGNORABLE.match(ch) or _GENERIC_MARKS.match(ch):
        return ""
    if ch in _FULL_STOPS:
        return "."
    cat = unicodedata.category(ch)
    if cat == "Pd":
        return "-"
    if cat == "Zs":
        return " "
    d = unicodedata.digit(ch, None)
    if d is not None and cat in ("Nd", "No"):
        return str(d)
    like = _LIKE.get(ch)
    if like is not None:
        return like
    if cat in ("So", "No"):
        t = anyascii(ch)
        if len(t) == 1 and t.isdigit():
            return t  # a digit symbol the Unicode data gives no value (🄋)
    if cat in ("Lo", "Nl"):
        v = unicodedata.numeric(ch, None)
        if (v is not None and v == int(v) and 0 <= v <= 9 and "CJK" in unicodedata.name(ch, "")) \
                or ch == "\u3007":
            return str(int(v or 0))
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        if not c.isascii():
            dd = unicodedata.decimal(c, None)
            if dd is not None:
                c = str(dd)
        out.append(c)
    return "".join(out)


_STRUCTURAL = frozenset("@.-+0123456789")


def structural_ascii(text: str) -> str:
    """``text`` with every character the detectors read as ``@``, ``.``,
    ``-``, ``+`` or a digit written as that ASCII character, the rest as it
    is. A transliteration to ASCII applied after it keeps what the detectors
    saw: anyascii alone writes a middle dot as ``-`` (``gmail·com`` would
    become ``gmail-com``, no longer an address), the heavy minus as
    ``:heavy_minus_sign:`` and a circled ``ⓐ`` as ``a``. Per character, so
    it maps a concatenation to the concatenation of its images."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        f = ch if ch.isascii() else _fold_char(ch)
        out.append(f if len(f) == 1 and f in _STRUCTURAL else ch)
    return "".join(out)


def _fold(text: str) -> _Mapped:
    """The detection copy (see the module docstring), per character."""
    if text.isascii():
        n = len(text)
        return _Mapped(text, list(range(n)), list(range(1, n + 1)))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        f = ch if ch.isascii() else _fold_char(ch)
        chars.append(f)
        starts.extend([i] * len(f))
        ends.extend([i + 1] * len(f))
    return _Mapped("".join(chars), starts, ends)


# --------------------------------------------------------------------------- e-mail
# Bounded quantifiers only: each alternative matches at most a few characters,
# so a search is linear however the input is built.
#: Brackets, quotes and marks an obfuscated "@" or "." is put between:
#: [at] (at) {at} <at> «at» "at" 'at' “at” *at* #at#.
_OPEN = r"(?:<<|[\[({<\u00ab\u2039\"'\u201c\u2018*#])"  # "<<": a guillemet in ASCII
_CLOSE = r"(?:>>|[\])}>\u00bb\u203a\"'\u201d\u2019*#])"
#: "@" and "." spelt out: English, Indian English ("at the rate", "atrate"), Spanish
#: (arroba, punto), French (arobase), German (Punkt). Not "point": in English
#: prose "at that point in time" would read as an address.
_AT_WORDS = ("at the rate of", "at the rate", "atrate", "arobase", "arroba", "at")
_DOT_WORDS = ("punkt", "punto", "dot")


def _words(words: Iterable[str]) -> str:
    return "(?:" + "|".join(w.replace(" ", "[ \t]") for w in words) + ")"


#: Spaces, or one line break with spaces around it.
_BREAK = r"(?:[ \t]{1,3}|[ \t]{0,3}\r?\n[ \t]{0,3})"
_AT_FORMS = re.compile(
    r"[ \t]{0,3}" + _OPEN + r"[ \t]{0,2}(?:" + _words(_AT_WORDS) + r"|@)[ \t]{0,2}" + _CLOSE
    + r"[ \t]{0,3}"  # name [at] domain, (@), "at"
    r"|(?<=[^\s])[ \t]{1,3}" + _words(_AT_WORDS) + r"[ \t]{1,3}(?=[^\s])"  # name at domain
    r"|" + _BREAK + r"?@(?:" + _BREAK + r"?@){1,3}" + _BREAK + r"?"  # name@@domain, name @ @ domain
    r"|" + _BREAK + r"@" + _BREAK + r"?|@" + _BREAK,  # name @ domain, a line break before or after
    re.IGNORECASE,
)
_DOT_FORMS = re.compile(
    r"[ \t]{0,3}" + _OPEN + r"[ \t]{0,2}(?:" + _words(_DOT_WORDS) + r"|\.)[ \t]{0,2}" + _CLOSE
    + r"[ \t]{0,3}"  # [dot], (.)
    r"|(?<=[^\s])[ \t]{1,3}" + _words(_DOT_WORDS) + r"[ \t]{1,3}(?=[^\s])"  # domain dot com
    r"|(?<=[^\s_-])[_-]dot[_-](?=[^\s_-])"  # domain-dot-com, domain_dot_com
    r"|(?<=[^\s.])[ \t]{1,3}\.[ \t]{1,3}(?=[^\s.])",  # domain . com
    re.IGNORECASE,
)
#: HTML character references (also escaped once more: &amp;#64;), percent
#: escapes (also of "%": %2540), quoted-printable (=40) and backslash escapes
#: (\u0040, \x40) of "@" and ".".
_ESCAPES = re.compile(
    r"&(?:amp;)?(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});?|%(?:25)?[0-9a-fA-F]{2}"
    r"|=(?:40|2[eE])|\\(?:u00|x)(?:40|2[eE])"
)


def _unescape(m: re.Match[str]) -> str:
    s = m.group()
    if s[0] == "&":
        ref = "&" + s[5:] if s.startswith("&amp;") and len(s) > 5 else s
        c = html.unescape(ref if ref.endswith(";") else ref + ";")
    else:
        c = chr(int(s[-2:], 16))
    return c if c in ("@", ".") else s


#: Escapes of the characters of a phone number (digits, "+", separators):
#: HTML character references, complete with their ";" (``&#57;``, ``&#x39;``,
#: ``&nbsp;``, ``&ndash;``, also escaped twice: ``&amp;#57;``), percent escapes
#: (``%39``, ``%20``, ``%2539``) and backslash escapes (``\u0039``, ``\x39``).
#: The ";" is required so that an escape read while an answer streams is the
#: escape the whole answer has ("&#5" may still become "&#53;").
_NUMBER_ESCAPES = re.compile(
    r"&(?:amp;)?(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});|%(?:25)?[0-9a-fA-F]{2}"
    r"|\\(?:u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2})"
)
# The beginning of such an escape at the end of a text.
_PARTIAL_NUMBER_ESCAPE = re.compile(
    r"(?:&(?:#[xX]?[0-9a-fA-F]{0,7}|[a-zA-Z]{1,8}|amp;(?:#[xX]?[0-9a-fA-F]{0,7}|[a-zA-Z]{0,8}))?"
    r"|%(?:25?[0-9a-fA-F]?|[0-9a-fA-F])?|\\(?:u[0-9a-fA-F]{0,3}|x[0-9a-fA-F]?)?)\Z"
)
_NUMBER_CHARS = frozenset("0123456789+()[]-./_~|:*'\\ \t\u2022")


def _unescape_number(m: re.Match[str]) -> str:
    s = m.group()
    if s[0] == "&":
        c = html.unescape("&" + s[5:] if s.startswith("&amp;") else s)
    else:
        c = chr(int(s[-4:] if s[1] == "u" else s[-2:], 16))
    if len(c) != 1:
        return s
    f = c if c.isascii() else _fold_char(c)
    return f if len(f) == 1 and f in _NUMBER_CHARS else s


#: What may stand in a local part besides letters and digits: RFC 5322's
#: atext, less "! ? * ` { | }", which end words and sentences in prose and code
#: (a word ending in one would be held back while an answer streams) and are
#: not seen in real addresses. A local part never ends the mask early:
#: "o'brien@…" and "id=raj@…" are masked whole, not from the "brien".
_LOCAL_PUNCT = frozenset(".#$%&'+-/=^_~")


def _is_mark(ch: str) -> bool:
    # Python's isalnum() is False for combining marks (Devanagari vowel signs…).
    return unicodedata.category(ch)[0] == "M"


def _is_local_char(ch: str) -> bool:
    return ch.isalnum() or ch in _LOCAL_PUNCT or (not ch.isascii() and _is_mark(ch))


def _is_domain_char(ch: str) -> bool:
    return ch.isalnum() or ch in "-." or (not ch.isascii() and _is_mark(ch))


def _is_tld(label: str) -> bool:
    return len(label) >= 2 and all(c.isalpha() or _is_mark(c) for c in label)


def _domain_length(domain: str) -> int:
    """Length of the longest prefix of ``domain`` that is ``label(.label)+``
    ending in a top-level-domain-like label; 0 if there is none."""
    best = 0
    pos = 0
    for index, label in enumerate(domain.split(".")):
        if not label or label[0] == "-" or label[-1] == "-":
            break
        pos += len(label)
        if index >= 1 and _is_tld(label):
            best = pos
        pos += 1  # the dot
    return best


#: Single letters or digits spaced out ("j o h n", "e x a m p l e", also two
#: or three spaces apart: "j  o  h  n"), at the start of a word and up to its
#: end or an "@" or "."; or ending in a word glued to the "@" ("j o hn@"):
#: read as one word.
_SPACED_OUT = re.compile(
    r"(?<![^\s@.(\[<'\"])[^\W_](?:[ \t]{1,3}[^\W_])+"
    r"(?:[ \t]{1,3}[^\W_]{2,64}(?=[ \t]{0,3}(?:@|" + _OPEN + r"|(?i:at|atrate|arroba|arobase)(?![^\W_])))"
    r"|(?=[\s@.,;:!?)\]>'\"]|\Z))")
#: The same, still being written at the end of a text: single characters
#: spaced out, and maybe a last word, that an "@" (or "at", "[at]"…) may
#: still follow ("j o h", "j o hn", "j o hn a").
_SPACED_TAIL = re.compile(
    r"(?<![^\s@.(\[<'\"])[^\W_](?:[ \t]{1,3}[^\W_])+(?:[ \t]{1,3}[^\W_]{2,64})?"
    r"(?:[ \t]{1,3}[A-Za-z\[({<\u00ab\u2039\"'\u201c\u2018*#]{1,8})?[ \t]{0,3}\Z")
#: How far back such a tail may begin: a local part's 64 characters, spaced out.
_SPACED_TAIL_REACH = 4 * _MAX_LOCAL + 70


def _spaced_tail(text: str) -> int:
    """Where single characters spaced out (with a letter among them) and a
    last word at the end of ``text`` begin: they may still become a local
    part ("j o hn" + "@…"); ``len(text)`` if they do not stand there. At
    most :data:`_SPACED_TAIL_REACH` characters back: a local part is 64
    characters."""
    found = _SPACED_TAIL.search(text, max(0, len(text) - _SPACED_TAIL_REACH))
    if found is None or not any(c.isalpha() for c in found.group()):
        return len(text)  # digits spaced out are the phone scan's ("1 1 1 …")
    return found.start()


def _join_spaced(m: re.Match[str]) -> str:
    return m.group().replace(" ", "").replace("\t", "")


def _email_copy(folded: _Mapped) -> _Mapped:
    return folded.sub(_ESCAPES, _unescape).sub(_SPACED_OUT, _join_spaced) \
        .sub(_AT_FORMS, "@").sub(_DOT_FORMS, ".")


_AT_WORD_SET = frozenset(_AT_WORDS)
#: Words that follow the preposition "at" in prose (determiners, pronouns,
#: times of day): "look at this dot net", "meet at noon dot com" are no address.
_AFTER_AT = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "me", "you", "him", "her", "us",
    "them", "my", "your", "his", "our", "their", "all", "any", "some", "each", "every", "least", "most",
    "first", "last", "once", "home", "work", "school", "night", "noon", "midnight", "dawn", "dusk",
    "times", "one", "which", "what", "whom", "whose",
))


def _spelt_at(m: _Mapped, at: int, original: str) -> bool:
    """Was the "@" at ``at`` written as a bare word ("at", "arroba")?"""
    written = original[m.starts[at] : m.ends[at]]
    return " ".join(written.split()).casefold() in _AT_WORD_SET


def _plausible_after_spelt_at(local: str, domain: str) -> bool:
    """An address with its "@" spelt as a bare word must look like one: the
    domain does not start with a word that follows "at" in prose, or with a
    number of one or two digits (an hour: "meet at 5 dot com"), and the local
    part has a letter."""
    first = domain.split(".", 1)[0].casefold()
    if first in _AFTER_AT or (first.isdigit() and len(first) <= 2):
        return False
    return any(c.isalpha() for c in local)


def _find_emails(m: _Mapped, original: str | None = None) -> list[tuple[int, int]]:
    """Spans in ``m`` (the e-mail copy of ``original``) of e-mail addresses."""
    text = m.text
    n = len(text)
    spans: list[tuple[int, int]] = []
    at = text.find("@")
    floor = 0
    while at != -1:
        # Local part: back over local characters, at most 64 and never into the
        # previous finding, so the ranges scanned for successive '@'s are disjoint.
        s = at
        lo = max(floor, at - _MAX_LOCAL)
        while s > lo and _is_local_char(text[s - 1]):
            s -= 1
        while s < at and text[s] in _LOCAL_PUNCT:
            s += 1
        e = at + 1
        hi = min(n, at + 1 + _MAX_DOMAIN)
        while e < hi and _is_domain_char(text[e]):
            e += 1
        length = _domain_length(text[at + 1 : e]) if s < at else 0
        if length and original is not None and _spelt_at(m, at, original) \
                and not _plausible_after_spelt_at(text[s:at], text[at + 1 : at + 1 + length]):
            length = 0
        if length:
            end = at + 1 + length
            spans.append((s, end))
            floor = end
            at = text.find("@", end)
        else:
            at = text.find("@", at + 1)
    return spans


# Local-part and domain characters (and "@") up to the end of an ASCII text:
# the local part's punctuation is _LOCAL_PUNCT's (the domain's "." and "-" are in it).
_ASCII_CHAIN = re.compile("[A-Za-z0-9@" + re.escape("".join(sorted(_LOCAL_PUNCT))) + r"]*\Z")


def _prefixes(words: Iterable[str]) -> str:
    """Every non-empty beginning of the words, longest first, as a regex."""
    out = sorted({w[:i] for w in words for i in range(1, len(w) + 1)}, key=len, reverse=True)
    return _words(out)


_WORD_PREFIX = _prefixes((*_AT_WORDS, *_DOT_WORDS))
# A possibly unfinished obfuscation at the very end of a text.
_PARTIAL_TAIL = re.compile(
    r"(?:" + _BREAK + r"(?:" + _OPEN + r"[ \t]{0,2})?(?:" + _WORD_PREFIX + r"|@|\.)?[ \t]{0,2}"
    + _CLOSE + r"?[ \t]{0,3}"
    r"|" + _OPEN + r"[ \t]{0,2}(?:" + _WORD_PREFIX + r"|@|\.)?[ \t]{0,2}" + _CLOSE
    + r"?[ \t]{0,3}"  # glued: raj[at]
    r"|" + _BREAK + r"?@(?:" + _BREAK + r"?@){0,3}" + _BREAK + r"?"  # raj @, raj@@, raj@ + line break
    # "raj at the r": the copy read "at" as "@" before "at the rate" was complete
    r"|@" + _prefixes(w[3:] for w in _AT_WORDS if w.startswith("at ")) + r"[ \t]{0,3}"
    r"|&(?:a(?:m(?:p(?:;#?[0-9a-zA-Z]{0,8})?)?)?|#?[0-9a-zA-Z]{0,8})"
    r"|%(?:25?)?[0-9a-fA-F]?|=[0-9a-fA-F]?|\\(?:u0?0?[0-9a-fA-F]?|x[0-9a-fA-F]?)?)\Z",
    re.IGNORECASE,
)


def _email_open_start(m: _Mapped, spans: list[tuple[int, int]]) -> int:
    """Position in ``m`` from which an e-mail address may still be in
    progress at the end of the text (``len(m.text)`` if none). ``spans`` are
    the addresses found in ``m``."""
    text = m.text
    n = len(text)
    end = n
    tail = _PARTIAL_TAIL.search(text, max(0, n - 24))
    if tail is not None:
        end = tail.start()
    if spans and spans[-1][1] >= end:
        return spans[-1][0]  # its domain may go on
    if spans:
        # Domain characters from the last address to the end: its domain may
        # still go on ("raj@gmail.com dot a" may become ".abcxyz").
        s0, e0 = spans[-1]
        at = text.rfind("@", s0, e0)
        k = e0
        while k < end and k - at <= _MAX_DOMAIN and _is_domain_char(text[k]):
            k += 1
        if k == end and end - at <= _MAX_DOMAIN:
            return s0
    lo = max(0, end - (_MAX_LOCAL + 1 + _MAX_DOMAIN), spans[-1][1] if spans else 0)
    if text.isascii():
        found = _ASCII_CHAIN.search(text, lo, end)
        s = found.start() if found is not None else end
    else:
        s = end
        while s > lo and (_is_local_char(text[s - 1]) or text[s - 1] == "@"):
            s -= 1
    chain = text[s:end]
    at = chain.rfind("@")
    if at == -1:
        return max(s, end - _MAX_LOCAL) if s < end else end
    if end - (s + at + 1) >= _MAX_DOMAIN:
        return end
    return max(s, s + at - _MAX_LOCAL)


# --------------------------------------------------------------------------- phone
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
#: Characters between the digit groups of a number: space, tab and the
#: punctuation people put there ("98765_43210", "987|654|3210", "987:654:3210",
#: "987*654*3210", "987~654~3210", "987'654'3210", "987\\654\\3210" as much
#: as "987-654-3210").
#: What each means elsewhere (an hour, a thousands group, a range) is judged
#: per run-word (:func:`_other_shape`).
_SEP_CHARS = r" \t./()\[\]\-_~|:*'\\\u2022"
# A run: an optional lead, digit groups, separators of at most four characters
# (one line break at most). A comma is not one: "1,234" and "1, 2" are
# thousands and lists far more often than a phone number's groups. The classes are disjoint, so matching is linear.
_RUN = re.compile(
    r"(?:\(?\+|\()?[0-9]+(?:(?:[" + _SEP_CHARS + r"]{1,4}|[" + _SEP_CHARS + r"]{0,3}\r?\n["
    + _SEP_CHARS + r"]{0,3})[0-9]+)*"
)
_GROUP = re.compile(r"[0-9]+")
# Quick tests for the common case: no e-mail form at all, and too few digits
# for a phone number.
_MAYBE_EMAIL = re.compile(r"[@&%=\\]|(?<![A-Za-z])(?:at|atrate|dot|arroba|arobase|punto|punkt)(?![A-Za-z])",
                          re.IGNORECASE)
_NO_DIGITS = str.maketrans("", "", "0123456789")
# A run (or its lead) that reaches the end of the text.
# (A comma too: digit groups joined by commas alone may still be a number.)
_TRAILING_RUN = re.compile(r"(?:(?:\(?\+|\()?[0-9][\r\n0-9," + _SEP_CHARS + r"]*|\(?\+|\()\Z")


def _has_space(text: str, a: int, b: int) -> bool:
    return any(c.isspace() for c in text[a:b])


# What may still turn into the start of a run, or continue one, at the end of a text.
_OPEN_LEAD = re.compile(r"(?:\(?\+?|\()\Z")
_SEP_PREFIX = re.compile(r"[" + _SEP_CHARS + r"]{0,4}|[" + _SEP_CHARS + r"]{0,3}\r?\n?["
                         + _SEP_CHARS + r"]{0,3}")


def parse_regions(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"in, US,gb"`` -> ``("IN", "US", "GB")``. Raises :exc:`ValueError`
    naming an unknown region."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    supported = phonenumbers.SUPPORTED_REGIONS
    for item in items:
        code = item.strip().upper()
        if not code:
            continue
        if code not in supported:
            raise ValueError(f"unknown region {item.strip()!r} (expected ISO 3166 codes such as IN,US,GB)")
        if code not in out:
            out.append(code)
    if not out:
        raise ValueError("expected at least one region, e.g. IN,US,GB")
    return tuple(out)


@dataclass(frozen=True)
class _Region:
    code: str
    cc: str  # country calling code
    prefix: str  # national (trunk) prefix, "" if none
    bare: re.Pattern[str]  # a mobile (or fixed-or-mobile) national number
    general: re.Pattern[str]  # any national significant number
    #: The fewest significant digits a number written nationally must have:
    #: the region's shortest mobile number (see the module docstring).
    min_significant: int
    #: (leading digits, pattern, whether a number of that format is written
    #: with its trunk prefix): the region's national formats, in metadata order.
    formats: tuple[tuple[re.Pattern[str] | None, re.Pattern[str], bool], ...]

    def prefix_required(self, nsn: str) -> bool:
        """Does the region write this number nationally with its trunk prefix?
        libphonenumber's rule (``PhoneNumberMatcher``'s *VALID* leniency): the
        first national format whose leading digits and pattern fit decides; its
        prefix formatting rule requires the prefix unless it is optional or
        only brackets the first group."""
        for leading, pattern, required in self.formats:
            if (leading is None or leading.match(nsn)) and pattern.fullmatch(nsn):
                return required
        return False

    def groupings(self, number: phonenumbers.PhoneNumber) -> frozenset[tuple[int, ...]]:
        """How the region writes ``number`` nationally, as digits per group:
        its national format, without the trunk prefix, and with the prefix as
        a group of its own ("1 800 555 1234", "0 20 7946 0958")."""
        groups = tuple(len(g) for g in _GROUP.findall(
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)))
        out = {groups}
        p = len(self.prefix)
        if p and groups:
            if sum(groups) > len(phonenumbers.national_significant_number(number)):
                if groups[0] > p:  # the format writes the prefix: "020 …"
                    out.add((groups[0] - p, *groups[1:]))
                    out.add((p, groups[0] - p, *groups[1:]))
            else:
                out.add((p, *groups))
        return frozenset(out)


_FIRST_GROUP_ONLY = re.compile(r"\(?\\1\)?")


def _region(code: str) -> _Region:
    meta = PhoneMetadata.metadata_for_region(code)
    assert meta is not None, code
    mobile = meta.mobile.national_number_pattern if meta.mobile is not None else None
    general = (meta.general_desc.national_number_pattern if meta.general_desc is not None else None) or r"\d+"
    lengths = [n for n in (meta.mobile.possible_length if meta.mobile is not None else ()) if n > 0] \
        or [n for n in (meta.general_desc.possible_length if meta.general_desc is not None else ()) if n > 0] \
        or [_MIN_PHONE_DIGITS]
    formats: list[tuple[re.Pattern[str] | None, re.Pattern[str], bool]] = []
    for f in meta.number_format:
        rule = f.national_prefix_formatting_rule or ""
        required = bool(rule) and not f.national_prefix_optional_when_formatting \
            and _FIRST_GROUP_ONLY.fullmatch(rule) is None
        leading = re.compile(f.leading_digits_pattern[-1]) if f.leading_digits_pattern else None
        formats.append((leading, re.compile(f.pattern or r"(?!)"), required))
    return _Region(
        code=code,
        cc=str(meta.country_code),
        prefix=meta.national_prefix or "",
        bare=re.compile(f"(?:{mobile or '(?!)'})"),
        general=re.compile(f"(?:{general})"),
        min_significant=min(lengths),
        formats=tuple(formats),
    )


# --------------------------------------------------------------------------- numbers in words
#: Digits spelt as words, in English, Spanish, French, German and romanised
#: Hindi: "nine eight seven six…", "cinco cinco", "zéro six", "neun acht".
#: English tens and teens too ("ninety-eight seventy-six"), as people say
#: numbers in pairs; tens with a unit after them are one pair ("twenty-one").
_UNIT_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "niner": "9",
    "cero": "0", "uno": "1", "dos": "2", "tres": "3", "cuatro": "4", "cinco": "5", "seis": "6",
    "siete": "7", "ocho": "8", "nueve": "9",
    "z\u00e9ro": "0", "deux": "2", "trois": "3", "quatre": "4", "cinq": "5", "sept": "7",
    "huit": "8", "neuf": "9",
    "null": "0", "eins": "1", "zwei": "2", "zwo": "2", "drei": "3", "vier": "4", "f\u00fcnf": "5",
    "fuenf": "5", "sechs": "6", "sieben": "7", "acht": "8", "neun": "9",
    "shunya": "0", "shoonya": "0", "ek": "1", "teen": "3", "chaar": "4", "paanch": "5", "panch": "5",
    "chhe": "6", "chhah": "6", "saat": "7", "aath": "8", "nau": "9",
}
_PAIR_WORDS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
    "diez": "10", "dix": "10", "zehn": "10",
}
_TENS_WORDS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fifty": "5", "sixty": "6", "seventy": "7",
    "eighty": "8", "ninety": "9",
}
#: Words that are a digit only next to another number ("one oh one", "ek do
#: teen"): elsewhere they are words ("oh well", "do it", "un jour", "char c").
_CONTEXT_WORDS = {"oh": "0", "do": "2", "un": "1", "une": "1", "una": "1", "ein": "1", "eine": "1",
                  "char": "4", "chaar": "4"}
#: "double five" is 55, "triple nine" 999.
_REPEAT_WORDS = {"double": 2, "triple": 3, "doble": 2}
_VOCABULARY = frozenset((*_UNIT_WORDS, *_PAIR_WORDS, *_TENS_WORDS, *_CONTEXT_WORDS, *_REPEAT_WORDS))
_VOCABULARY_PREFIXES = frozenset(w[:i] for w in _VOCABULARY for i in range(1, len(w) + 1))
_LETTER_WORD = re.compile(r"[^\W\d_]+")
_LONGEST_NUMBER_WORD = max(map(len, _VOCABULARY))
#: A word or a digit group, and what may stand between two numbers spelt out
#: (spaces, a hyphen or a comma: "nine-eight", "five five five, one two").
_WORD_OR_DIGITS = re.compile(r"[^\W\d_]+|[0-9]+")
_WORD_GAP = re.compile(r"[ \t]{0,2}[,\-]?[ \t]{0,2}")
_LETTERS_AT_END = re.compile(r"[^\W\d_]+\Z")
_NUMBER_GAP_AT_END = re.compile(r"[0-9][ \t]{0,2}[,\-][ \t]{0,2}\Z")


def _has_number_words(text: str, final: bool) -> bool:
    """Does ``text`` have a number word, or (``final`` false) end in the
    beginning of one?"""
    for w in _LETTER_WORD.finditer(text):
        if w.end() - w.start() <= _LONGEST_NUMBER_WORD and w.group().casefold() in _VOCABULARY:
            return True
    if not final:
        if _NUMBER_GAP_AT_END.search(text, max(0, len(text) - 8)) is not None:
            return True  # "765, " may go on "twenty…": the comma would read as a space
        last = _LETTERS_AT_END.search(text, max(0, len(text) - 8))
        return last is not None and last.group().casefold() in _VOCABULARY_PREFIXES
    return False


def _word_value(word: str) -> str | None:
    w = word.casefold()
    return _UNIT_WORDS.get(w) or _PAIR_WORDS.get(w)


def _read_number_words(m: _Mapped, final: bool) -> tuple[_Mapped, int, list[tuple[int, int]]]:
    """``m`` with digits spelt as words read as digits (``nine eight`` ->
    ``9 8``, ``double five`` -> ``55``, ``twenty-one`` -> ``21``), and the
    commas and hyphens between two numbers one of which is a word read as a
    space; and the index of ``m`` up to which that reading is settled
    (``len(m.text)`` when ``final``; before a last word that may still grow
    into a number word or out of one, or a word whose reading depends on the
    word after it, which has not come yet); and the spans of ``m`` where a
    word reads by the one before it ("twenty one", "double five", "nine
    oh"): a scan that started afresh between them would read it otherwise,
    so no cut may part them. Linear in the text."""
    text = m.text
    n = len(text)
    toks = [(t.start(), t.end(), t.group()) for t in _WORD_OR_DIGITS.finditer(text)]
    k = len(toks)
    if not k:
        return m, n, []
    bound: list[tuple[int, int]] = []

    def adjacent(a: int) -> bool:  # tokens a and a + 1 stand next to each other
        return a + 1 < k and toks[a][1] < toks[a + 1][0] \
            and _WORD_GAP.fullmatch(text, toks[a][1], toks[a + 1][0]) is not None

    def glued(a: int) -> bool:  # a word glued to digits ("3210two", "twenty5"): part of something else
        s, e, word = toks[a]
        return not word.isdigit() and ((s > 0 and text[s - 1].isdigit()) or (e < n and text[e].isdigit()))

    def plain(a: int) -> bool:  # a number in its own right (not a context word)
        word = toks[a][2]
        return word.isdigit() or (not glued(a) and (_word_value(word) is not None
                                                    or word.casefold() in _TENS_WORDS))

    values: list[str | None] = [None] * k
    a = 0
    while a < k:
        s, e, word = toks[a]
        low = word.casefold()
        if glued(a):
            a += 1
            continue
        if word.isdigit():
            values[a] = word
        elif low in _TENS_WORDS:
            unit = _UNIT_WORDS.get(toks[a + 1][2].casefold()) if adjacent(a) and not glued(a + 1) else None
            if unit is not None and unit != "0" and text[e : toks[a + 1][0]] in ("-", " "):
                values[a] = _TENS_WORDS[low] + unit
                values[a + 1] = ""  # read with the word before it
                bound.append((s, toks[a + 1][1]))
                a += 2
                continue
            values[a] = _TENS_WORDS[low] + "0"
        elif low in _REPEAT_WORDS:
            nxt = toks[a + 1][2] if adjacent(a) and not glued(a + 1) else ""
            digit = nxt if len(nxt) == 1 and nxt.isdigit() else \
                _UNIT_WORDS.get(nxt.casefold()) or _CONTEXT_WORDS.get(nxt.casefold())
            if digit is not None and len(digit) == 1 and text[e : toks[a + 1][0]] in (" ", "-"):
                values[a] = digit * _REPEAT_WORDS[low]
                values[a + 1] = ""  # read with the word before it
                bound.append((s, toks[a + 1][1]))
                a += 2
                continue
        else:
            v = _word_value(word)
            if v is None and low in _CONTEXT_WORDS:
                if a > 0 and adjacent(a - 1) and plain(a - 1):
                    v = _CONTEXT_WORDS[low]
                    bound.append((toks[a - 1][0], e))
                elif adjacent(a) and plain(a + 1):
                    v = _CONTEXT_WORDS[low]
            values[a] = v
        a += 1
    # How far the reading is settled while the text may go on.
    settled = n
    if not final:
        last = k - 1
        s, e, word = toks[last]
        low = word.casefold()
        if e == n or _WORD_GAP.fullmatch(text, e, n) is not None:
            if e == n and not word.isdigit() and low in _VOCABULARY_PREFIXES:
                settled = s  # may still grow into a number word, or out of one
            elif low in _TENS_WORDS or low in _REPEAT_WORDS or (low in _CONTEXT_WORDS and values[last] is None):
                settled = s  # its reading depends on the word after it
            elif values[last] is not None and e < n:
                settled = e  # the gap after it reads as a space only if a number follows
            # The word before the last reads by the last: tens, "double", context words.
            first = last if settled == s else None
            if last > 0 and adjacent(last - 1) and (toks[last - 1][2].casefold() in _TENS_WORDS
                                                    or toks[last - 1][2].casefold() in _REPEAT_WORDS
                                                    or toks[last - 1][2].casefold() in _CONTEXT_WORDS):
                settled = min(settled, toks[last - 1][0])
                first = last - 1
            # The gap before an unsettled word reads as a space if it turns out a number.
            if first is not None and first > 0 and adjacent(first - 1) and values[first - 1] is not None:
                settled = min(settled, toks[first - 1][1])
    out = m
    if any(v is not None and v != toks[a][2] for a, v in enumerate(values)):
        pieces: list[tuple[int, int, str]] = []  # (start, end, replacement) in m
        for a in range(k):
            s, e, word = toks[a]
            v = values[a]
            if v is None or v == "" or s >= settled:
                continue  # not a number, or read with the word before it
            after = a + 1
            if after < k and values[after] == "":
                e = toks[after][1]  # "twenty-one", "double five": one number
                after += 1
            is_word = not word.isdigit()
            if v != word:
                pieces.append((s, e, v))
            # The gap to the next number reads as a space where one of the two is a word.
            if after < k and values[after] is not None and e < toks[after][0] and toks[after][0] <= settled \
                    and (is_word or not toks[after][2].isdigit()) \
                    and text[e : toks[after][0]].strip(" \t") in (",", "-"):
                pieces.append((e, toks[after][0], " "))
        pieces.sort()
        out = _replace_pieces(m, pieces)
        settled = _out_index(pieces, settled)
    return out, settled, bound


def _replace_pieces(m: _Mapped, pieces: list[tuple[int, int, str]]) -> _Mapped:
    """``m`` with each (start, end) replaced (sorted, not overlapping): a
    replacement maps to the whole original span it replaces."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for s, e, r in pieces:
        if s < pos:
            continue
        chars.append(m.text[pos:s])
        starts.extend(m.starts[pos:s])
        ends.extend(m.ends[pos:s])
        if r:
            chars.append(r)
            starts.extend([m.starts[s]] * len(r))
            ends.extend([m.ends[e - 1]] * len(r))
        pos = e
    chars.append(m.text[pos:])
    starts.extend(m.starts[pos:])
    ends.extend(m.ends[pos:])
    return _Mapped("".join(chars), starts, ends)


def _out_index(pieces: list[tuple[int, int, str]], i: int) -> int:
    """Index in ``out`` of position ``i`` of ``m`` (not inside a piece)."""
    shift = 0
    pos = 0
    for s, e, r in pieces:
        if s < pos or s >= i:
            continue
        shift += len(r) - (e - s)
        pos = e
    return i + shift


#: Digit groups joined by commas alone ("987,654,3210", "98765,43210").
_COMMA_GROUPS = re.compile(r"(?<![0-9,])[0-9]+(?:,[0-9]+)+")
#: A number joined by commas has at most this many groups, each after the
#: first of three digits or more ("987,654,3210", "98765,43210"): more, or
#: shorter ones, are how lists are written ("35,25,22,40,38").
_MAX_COMMA_GROUPS = 3
#: Thousands as written in the West ("1,234,567") and in India ("12,34,567").
_THOUSANDS_COMMAS = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,2}(?:,[0-9]{2})*,[0-9]{3}")


def _read_commas(m: _Mapped, final: bool) -> tuple[_Mapped, int]:
    """``m`` with the commas of digit groups joined by commas alone read as
    separators where the groups are not thousands (Western ``1,234,567`` or
    Indian ``12,34,567``) and hold at least :data:`_MIN_PHONE_DIGITS` digits
    (``987,654,3210``, ``98765,43210``) as hyphens, when they are two or
    three groups, those after the first of three digits or more (more groups,
    or shorter ones, are a list); and the index up to which
    that is settled (before groups that may still go on)."""
    text = m.text
    n = len(text)
    settled = n
    pieces: list[tuple[int, int, str]] = []
    for g in _COMMA_GROUPS.finditer(text):
        s, e = g.span()
        if not final and (e == n or text[e:n] == ","):
            settled = s
            break
        word = g.group()
        groups = word.split(",")
        if _THOUSANDS_COMMAS.fullmatch(word) is not None or len(word) - len(groups) + 1 < _MIN_PHONE_DIGITS \
                or len(groups) > _MAX_COMMA_GROUPS or min(map(len, groups[1:])) < 3:
            continue  # thousands, too short, or a list ("35,25,22,40,38")
        if e < n and text[e] in ".," and e + 1 < n and text[e + 1].isdigit():
            continue  # an amount or a list that goes on ("1,2345.67")
        pieces.extend((s + i, s + i + 1, "-") for i, c in enumerate(word) if c == ",")
    if not pieces:
        return m, settled
    return _replace_pieces(m, pieces), settled


# --------------------------------------------------------------------------- phone context
# A *code word*: ASCII letters and digits with the characters that glue
# identifiers, paths, URLs and key=value pairs together. Digits inside a code
# word that is an identifier are part of it, never a phone number.
_CODE_CHARS = r"A-Za-z0-9_\-./:+#=~&%"
_CODE_SET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:+#=~&%")
_CODE_TAIL = re.compile(r"[" + _CODE_CHARS + r"]*")
# A letter glued to a digit, directly or by a hyphen or an underscore.
_MIXED = re.compile(r"[A-Za-z][-_]?[0-9]|[0-9][-_]?[A-Za-z]")
_CODE_GLUE = re.compile(r"[/=_#&~]")  # a path, a query, snake_case, #anchor
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_LATIN = regex.compile(r"[\p{Script=Latin}\p{Mn}]")
# Dates as one run-word: 2026-12-01, 01.12.2026, 12/01/26.
_DATE_YMD = re.compile(r"([0-9]{4})([-./])([0-9]{1,2})\2([0-9]{1,2})")
_DATE_DMY = re.compile(r"([0-9]{1,2})([-./])([0-9]{1,2})\2([0-9]{2}|[0-9]{4})")
_IPV4 = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3})(?:/([0-9]{1,2})|:[0-9]{1,5})?")
_DIGIT_SET = frozenset("0123456789")
# Hours and minutes (and seconds, fractions of them): "9:00", "13:45:10", "100:00".
_TIME = re.compile(r"[0-9]{1,3}(?::[0-5][0-9]){1,2}")
_NOT_COLON = re.compile(r"[^0-9:]+")
# Digit separators of amounts inside a run-word: thousands ("1'234'567.89",
# "2_147_483_647"; a comma never joins a run).
_THOUSANDS_SEPS = frozenset("'_")
_THOUSANDS = re.compile(r"[1-9][0-9]{0,2}(?:(?P<s>['_])[0-9]{3})(?:(?P=s)[0-9]{3})*(?:\.[0-9]+)?")
# An amount: a currency sign or code right before the digits (one space at most).
_CURRENCY_BEFORE = regex.compile(r"(?:\p{Sc}|(?<![A-Za-z])(?:Rs\.?|INR|USD|EUR|GBP|AUD|CAD)) ?\Z")


def _word_start(text: str, i: int) -> int:
    """The start of the word (no whitespace) around ``i``: a left operand
    ("f(71)" of "f(71) == …") is read from there, so no cut parts the two."""
    lo = max(0, i - _MAX_LOCAL)
    while i > lo and not text[i - 1].isspace():
        i -= 1
    return i


def _operator_tail(text: str) -> int:
    """Where an operator still waiting for its right operand at the end of
    ``text`` begins (from its left operand's word: "f(71) ==", "80118 *");
    ``len(text)`` if none."""
    found = _OPERATOR_TAIL.search(text, max(0, len(text) - 10))
    return _word_start(text, found.start()) if found is not None else len(text)


def _context_before(text: str, rs: int) -> int:
    """Where the context a run's judgement reads before it begins (a currency
    sign or code and a space, the left side of an equation, a factor, a minus
    sign); ``rs`` if none."""
    if rs == 0:
        return rs
    if text[rs - 1] == "-":
        return rs - 2 if rs > 1 else rs - 1
    found = _EQUATION_BEFORE.search(text, max(0, rs - 10), rs)
    if found is not None:
        return _word_start(text, found.start())
    if rs > 1 and text[rs - 1] == " ":
        amount = _CURRENCY_BEFORE.search(text, max(0, rs - 5), rs)
        if amount is not None:
            return amount.start()
    return rs


def _is_identifier(word: str) -> bool:
    """A code word with a letter glued to a digit (``0535096e``, ``a716``,
    ``v1.2``, ``INV-2041``), or letters with path, query or snake-case glue
    (``/orders/``, ``id=``, ``item_``)."""
    return _MIXED.search(word) is not None or (
        _CODE_GLUE.search(word) is not None and _ASCII_LETTER.search(word) is not None
    )


def _is_glue(ch: str) -> bool:
    """A character that, right next to a digit group, makes it part of
    something that is not a phone number: a Latin letter (libphonenumber's rule
    for ``abc8005001234``), ``_``, ``%``, ``#`` or a currency sign."""
    if ch in "_%#":
        return True
    if ch.isalpha():
        return ch.isascii() or _LATIN.match(ch) is not None
    return unicodedata.category(ch) == "Sc"


def _is_constant(v: int) -> bool:
    """A constant of programs, not a phone number: a power of two or one less
    (the limits of integer types, ``2147483647``, ``4294967295``, and masks:
    in binary a single one, or ones only), or a power of ten or one less."""
    if v & (v - 1) == 0 or v & (v + 1) == 0:
        return True
    s = str(v)
    return s.strip("9") == "" or s.rstrip("0") == "1"


def _other_shape(word: str, versions: bool = True) -> bool:
    """A run-word (digit groups joined without a space) that is something
    else: hours and minutes (``12:30``, ``10:30-11:45``), a number literal
    with digit separators (``2_147_483_647``), a constant of programs
    (``2147483647``: :func:`_is_constant`), a date (``2026-12-01``, ``01.12.2026``, ``20261201``), an IPv4
    address or network (``10.0.0.0/8``), a decimal number (``0.8414709848``;
    ``030.1234567`` is not one), or a version or part number whose later
    groups include a single digit (``2.0.1``, ``978-3-16-148410-0``)."""
    if versions and word.isdigit() and len(word) >= _MIN_PHONE_DIGITS and _is_constant(int(word)):
        return True  # a power of two, or one less (2147483647, 4294967295)
    m = _DATE_YMD.fullmatch(word)
    if m is not None and 1 <= int(m.group(3)) <= 12 and 1 <= int(m.group(4)) <= 31:
        return True
    m = _DATE_DMY.fullmatch(word)
    if m is not None:
        a, b = int(m.group(1)), int(m.group(3))
        if 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12:
            return True
    if len(word) == 8 and word.isdigit():
        return 1800 <= int(word[:4]) < 2200 and 1 <= int(word[4:6]) <= 12 and 1 <= int(word[6:]) <= 31
    m = _IPV4.fullmatch(word)
    if m is not None and all(int(p) <= 255 for p in m.group(1).split(".")) \
            and (m.group(2) is None or int(m.group(2)) <= 32):
        return True
    groups = _GROUP.findall(word)
    seps = set(word) - _DIGIT_SET
    if ":" in seps and all(_TIME.fullmatch(piece) for piece in _NOT_COLON.split(word) if ":" in piece):
        return True  # hours and minutes, also a range of them ("10:30-11:45")
    if seps & _THOUSANDS_SEPS and _THOUSANDS.fullmatch(word):
        return True  # an amount with digit separators ("1'234'567.89", "2_147_483_647")
    if seps == {"."} and len(groups) == 2 and (groups[0] == "0" or groups[0][0] != "0"):
        return True  # a decimal number
    return versions and len(seps) == 1 and seps <= {".", "-"} and len(groups) >= 3 \
        and any(len(g) == 1 for g in groups[1:])


#: A list of numbers has at least this many terms.
_LIST_TERMS = 5


def _round_step(d: int) -> bool:
    """A step people count in: 1 to 10, or a multiple of 5."""
    return 0 < abs(d) <= 10 or d % 5 == 0


def _chain(k: int, fits: Callable[[int], bool], same: Callable[[int], bool], base: int) -> list[int]:
    """Right to left: for each index ``g``, how many consecutive links
    ``g, g+1, …`` hold (``fits``) and agree with the next (``same``), plus
    ``base``; ``base`` where link ``g`` does not hold."""
    out = [base] * (k + 1)
    for g in range(k - 1, -1, -1):
        if fits(g):
            out[g] = (out[g + 1] + 1 if g + 1 < k and fits(g + 1) and same(g) else base + 1)
    return out


def _list_ends(digits: list[str], term: list[bool], open_run: bool) -> list[int | None]:
    """For each digit group ``t`` of a run, where the list of numbers that
    starts at ``t`` ends (one past its last term); ``t`` if none starts
    there; None if that depends on what may still come (``open_run``: the
    run reaches the end of a text that goes on). ``term``: may the group be
    a term (no leading zero, not part of something else)?

    A list is at least :data:`_LIST_TERMS` terms, strictly increasing or
    decreasing, and (a) neighbours at most four times apart with the number
    of digits changing in its first five ("6 7 8 9 10", primes, powers of
    two, Fibonacci), or
    (b) a constant step that people count in (1 to 10, a multiple of 5) or
    no larger than the smallest term, with a term of two or more digits
    ("21 22 23 24 25", "2020 2021 2022", "11 22 33 44 55"), or (c) terms of
    two or more digits whose steps are no larger than the smaller neighbour
    ("36 45 55 66 78", "10946 17711 28657 46368"), or (d) a constant,
    non-zero second or third difference (squares, cubes: "16 25 36 49 64",
    "0 1 8 27 64 125"). Digits spaced out one by one ("9 8 7 6 5 4 3 2 1 0")
    and pairs in a digit pattern ("98 76 54 32 10": steps of 22) are none of
    these: that is how phone numbers are written.

    Only the groups from ``t`` on are read, never those before it: the phone
    scan may start afresh at ``t`` (a streaming filter cuts there) and must
    decide the same. Linear in the number of groups."""
    k = len(digits)
    v = [int(t) for t in digits]
    w = [len(t) for t in digits]
    link = [g + 1 < k and term[g] and term[g + 1] and v[g] != v[g + 1] for g in range(k)]
    d = [v[g + 1] - v[g] if g + 1 < k else 0 for g in range(k)]

    def up(g: int) -> bool:
        return d[g] > 0

    def ratio(g: int) -> bool:
        return link[g] and max(v[g], v[g + 1]) <= 4 * max(min(v[g], v[g + 1]), 1)

    def gentle(g: int) -> bool:
        return link[g] and min(v[g], v[g + 1]) >= 10 and abs(d[g]) <= min(v[g], v[g + 1])

    def same_dir(g: int) -> bool:
        return up(g) == up(g + 1)

    def same_step(g: int) -> bool:
        return d[g] == d[g + 1]

    ratio_len = _chain(k, ratio, same_dir, 1)
    gentle_len = _chain(k, gentle, same_dir, 1)
    step_len = _chain(k, lambda g: link[g], same_step, 1)
    dd = [d[g + 1] - d[g] if g + 2 < k else 0 for g in range(k)]
    poly2 = _chain(k, lambda g: link[g] and g + 1 < k and link[g + 1] and dd[g] != 0,
                   lambda g: dd[g] == dd[g + 1], 2)
    ddd = [dd[g + 1] - dd[g] if g + 3 < k else 0 for g in range(k)]
    poly3 = _chain(k, lambda g: link[g] and g + 2 < k and link[g + 1] and link[g + 2] and ddd[g] != 0,
                   lambda g: ddd[g] == ddd[g + 1], 3)
    # The first index at or after g where the number of digits changes / a
    # term of two or more digits stands.
    change = [k] * (k + 1)
    multi = [k] * (k + 1)
    for g in range(k - 1, -1, -1):
        change[g] = g + 1 if g + 1 < k and w[g + 1] != w[g] else change[g + 1]
        multi[g] = g if v[g] >= 10 else multi[g + 1]
    last = k - 1
    out: list[int | None] = []
    for t in range(k):
        long_list = False  # a list of more than _LIST_TERMS terms starts here
        undecided = False
        end = t
        # Per rule: its chain from t, the terms it needs, and whether its
        # condition holds on those first terms.
        e5 = min(t + _LIST_TERMS - 1, k - 1)
        for length, needed, holds in (
            (ratio_len[t], _LIST_TERMS, change[t] <= e5),
            (step_len[t], _LIST_TERMS,
             multi[t] <= e5 and (_round_step(d[t]) or abs(d[t]) <= min(v[t], v[e5]))),
            (gentle_len[t], _LIST_TERMS, True),
            (poly2[t] if poly2[t] > 2 else 1, _LIST_TERMS, True),
            (poly3[t] if poly3[t] > 3 else 1, _LIST_TERMS + 1, True),
        ):
            # Terms known for certain: with the run open, its last group may
            # still grow (and break the chain) and more may follow.
            growing = open_run and t + length - 1 >= last - 1
            known = min(length, last - t) if growing else length
            is_list = known >= needed and holds
            if is_list and known > needed:
                long_list = True
            elif growing and known <= needed:
                undecided = True  # may still become a list, or a longer one
            elif is_list:
                end = max(end, t + length)
        # A long list is passed one term at a time (the scan may start afresh
        # at each, and its rest is still a list); its last _LIST_TERMS terms
        # are passed at once.
        out.append(t + 1 if long_list else None if undecided else end)
    return out


# The right side of an equation ("=" or "==" after a number or a bracket), or
# a factor ("×", or "*" between spaces: see _TIMES).
_OPERATOR_TAIL = re.compile(r"[0-9)\]!][ \t]{0,3}(?:={1,2}|\*|\u00d7)[ \t]{0,3}-?\Z")
_EQUATION_BEFORE = re.compile(r"(?:[0-9)\]!][ \t]{0,3}={1,2}|\u00d7)[ \t]{0,3}-?\Z")
# "=" and a number after a run: the run is the left side of an equation
# ("tel 212 736 5000 = office" is not one). Spaces and tabs only, no more than
# a run's separator may have, so a streaming scan has not settled the run.
_EQUALS_AFTER = re.compile(r"[ \t]{0,3}(?:={1,2}[ \t]{0,3}[-0-9(]|\u00d7)")
# The same, its right side not written yet (at the end of a streaming text).
_EQUALS_PENDING = re.compile(r"[ \t]{0,3}={1,2}[ \t]{0,3}")
# A "*" with spaces around it between numbers multiplies them ("20731 * 30111");
# glued, it joins a number's groups ("987*654*3210").
_TIMES = re.compile(r"(?<=[0-9])[ \t]+\*[ \t]+(?=[0-9])")


def _times(m: re.Match[str]) -> str:
    return m.group().replace("*", "\u00d7")


_BRACKET = re.compile(r"[()\[\]]")


def _brackets_ok(text: str, s: int, e: int) -> bool:
    """Brackets in a candidate pair up, one level deep (libphonenumber's
    rule: ``arr[3632][10]`` and ``f(1)(2`` are code, ``(212) 736-5000`` is not)."""
    if _BRACKET.search(text, s, e) is None:
        return True
    open_ch = ""
    for ch in text[s:e]:
        if ch in "([":
            if open_ch:
                return False
            open_ch = ch
        elif ch in ")]":
            if open_ch != ("(" if ch == ")" else "["):
                return False
            open_ch = ""
    return True


@dataclass
class Scan:
    """What :meth:`PersonalDataDetector.scan` reports about a text that may
    still go on.

    ``findings``: as :meth:`~PersonalDataDetector.find`, but only the settled
    ones (those before ``open_start``). ``open_start``: from here on,
    something may still turn into a finding once more text arrives; before it
    nothing will change. ``blocked``: spans no cut may fall strictly inside
    (findings, and the stretches of a digit run between the places where the
    phone scan starts afresh)."""

    findings: list[PersonalData]
    open_start: int
    blocked: list[tuple[int, int]] = field(default_factory=list)


class PersonalDataDetector:
    """Finds e-mail addresses and phone numbers; ``regions`` are the ISO
    codes whose national formats count (see the module docstring)."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        self.regions = parse_regions(regions)
        self._regions = [_region(r) for r in self.regions]
        self._phone_ok = functools.lru_cache(maxsize=16384)(self._phone_ok_uncached)

    def __reduce__(self) -> tuple[object, tuple[tuple[str, ...]]]:
        # Pickled as its regions: the receiving process shares one per regions.
        return detector_for, (self.regions,)

    # ------------------------------------------------------------------ phones
    def _phone_ok_uncached(self, plus: bool, digits: str, grouping: tuple[int, ...], exact: bool) -> bool:
        """Is ``digits`` (written with ``plus`` before it, in groups of
        ``grouping`` digits) a phone number? ``exact``: only if grouped
        exactly as a region writes it. See the module docstring."""
        n = len(digits)
        if n < _MIN_PHONE_DIGITS or n > MAX_PHONE_DIGITS:
            return False
        intl = None
        if plus:
            intl = digits
        elif digits.startswith("011"):
            intl = digits[3:]
        elif digits.startswith("00"):
            intl = digits[2:]
        if intl is not None:
            try:
                number = phonenumbers.parse("+" + intl, None)
            except phonenumbers.NumberParseException:
                number = None
            if number is not None and phonenumbers.is_valid_number(number):
                return True
            if plus:
                return False
        grouped = len(grouping) > 1
        for r in self._regions:
            # With the trunk prefix (0…), or the country code without "+" (91…).
            with_prefix = any(
                p and digits.startswith(p) and r.general.fullmatch(digits, len(p)) is not None
                for p in (r.prefix, r.cc)
            )
            if not with_prefix and r.bare.fullmatch(digits) is None \
                    and not (grouped and r.general.fullmatch(digits) is not None):
                continue
            try:
                number = phonenumbers.parse(digits, r.code)
            except phonenumbers.NumberParseException:
                continue
            if not phonenumbers.is_valid_number_for_region(number, r.code):
                continue
            nsn = phonenumbers.national_significant_number(number)
            prefixed = with_prefix and len(nsn) < n
            if not prefixed and r.prefix_required(nsn):
                continue  # the region writes this number with its prefix
            if not exact and len(nsn) >= r.min_significant and (
                    prefixed or phonenumbers.number_type(number) in _MOBILE_TYPES):
                return True
            # Shorter numbers with their prefix, and landlines of regions that
            # have no prefix, count when the text groups the digits exactly as
            # the region writes them ("030 123456", Spain's "810 12 34 56").
            if grouped and (prefixed or not r.prefix or exact) and grouping in r.groupings(number):
                return True
        return False

    def _phones(self, folded: _Mapped, final: bool) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        """(spans, blocked spans, open start) in ``folded`` coordinates."""
        text = folded.text
        n = len(text)
        spans: list[tuple[int, int]] = []
        blocked: list[tuple[int, int]] = []
        open_start = n
        if not final:
            open_lead = _OPEN_LEAD.search(text, max(0, n - 2))
            if open_lead is not None and open_lead.start() < n:
                open_start = open_lead.start()
        has_letters = _ASCII_LETTER.search(text) is not None
        for run in _RUN.finditer(text):
            rs, run_end = run.span()
            groups = [(g.start() + rs, g.end() + rs) for g in _GROUP.finditer(run.group())]
            lead = text[rs : groups[0][0]]
            plus = "+" in lead
            digits = [text[s:e] for s, e in groups]
            k = len(groups)
            # Still open at the end of the text: more digits or groups may come
            # (grow), or what follows the last group may still make it part of
            # something else (a code word or glue that reaches the end).
            # (A comma too: groups joined by commas alone may be read as a number.)
            grow = not final and (_SEP_PREFIX.fullmatch(text, run_end, n) is not None or text[run_end:n] == ",")
            if not grow and sum(map(len, digits)) < _MIN_PHONE_DIGITS:
                continue  # too few digits for any number, and no more will come
            run_open = grow or (not final and (_CODE_TAIL.fullmatch(text, run_end, n) is not None
                                               or text[run_end:n] == ","
                                               or _EQUALS_PENDING.fullmatch(text, run_end, n) is not None))
            # Numbers start and end at whole words of the run: "2-4" is one
            # word, so no number ends between its 2 and its 4.
            word_start = [g == 0 or _has_space(text, groups[g - 1][1], groups[g][0]) for g in range(k)]
            word_end = [*word_start[1:], True]
            last_word = max(g for g in range(k) if word_start[g])
            spelt: list[int] = []
            barred = self._barred(text, groups, word_start, lead, rs, run_end, spelt)
            if not lead:
                # The run's judgement reads what stands before it ("$ 120",
                # "USD 98765 43210", "f(1) == 785400427"): no cut may part them.
                context = _context_before(text, rs)
                if context < rs:
                    blocked.append((context, rs + 1))
            # The number that starts at a "+" may spell its digits out like a
            # version ("+91 9-8-7-6-5-4-3-2-1-0"): its window alone reads them.
            barred_first = barred.copy()
            for g in spelt:
                barred_first[g] = False
            if has_letters:
                self._bar_identifiers(text, groups, word_start, barred)
                self._bar_identifiers(text, groups, word_start, barred_first)
            lengths = [e - s for s, e in groups]
            # Separators other than a single ".", counted up to each group.
            not_dot = [0]
            for g in range(k - 1):
                not_dot.append(not_dot[-1] + (text[groups[g][1] : groups[g + 1][0]] != "."))
            # A term has no leading zero and is not part of something else.
            unpadded = [not (lengths[g] > 1 and digits[g][0] == "0") for g in range(k)]
            term = [not barred[g] and unpadded[g] for g in range(k)]
            # Too few groups for a list, unless more may come (then whether one
            # starts here is not known yet).
            list_ends: list[int | None] = _list_ends(digits, term, run_open) if k >= _LIST_TERMS \
                else [None] * k if run_open else list(range(k))
            if run_open and k >= _LIST_TERMS:
                # Whether the last word is part of something else may still
                # change either way ("41209-17_" may go on "_16_10"; "44100_7"
                # may end in "_"), and with it whether its groups are terms:
                # where that would change a list, it is not known yet.
                for maybe in (True, False):
                    other = term[:last_word] + [maybe and unpadded[g] for g in range(last_word, k)]
                    if other != term:
                        list_ends = [a if a == b else None for a, b in
                                     zip(list_ends, _list_ends(digits, other, run_open), strict=True)]
            points = [rs]  # where the scan starts afresh: cuts may fall there only
            i = 0
            while i < k:
                if barred[i]:
                    if run_open and i >= last_word:
                        open_start = min(open_start, points[-1])  # the last word may change
                        break
                    i += 1
                else:
                    total = 0
                    j = i
                    window_barred = barred_first if plus and i == 0 else barred
                    while j < k and not window_barred[j] and total + len(digits[j]) <= MAX_PHONE_DIGITS:
                        total += len(digits[j])
                        j += 1
                    if run_open and (j == k or (window_barred[j] and j >= last_word)):
                        # The window may still grow, its last group get longer,
                        # or the last word turn out to be part of something else.
                        open_start = min(open_start, points[-1])
                        break
                    found = None
                    unsettled = False
                    s = rs if i == 0 else groups[i][0]
                    # The first group from here on that starts a list of numbers
                    # (or may): no number reaches it.
                    stop = i
                    while stop < j and list_ends[stop] == stop:
                        stop += 1
                    if plus and i == 0:
                        stop = j  # after "+" and a country code: a number ("+33 6 12 34 56 78")
                    if stop == i:
                        if list_ends[i] is None:
                            open_start = min(open_start, points[-1])
                            break
                        j = i  # a list starts here: skip it (below)
                    elif stop < j:
                        if list_ends[stop] is None and run_open:
                            unsettled = True
                        j = stop
                    if i > 0 and text[s - 1] == "(":
                        s -= 1
                    acc = "".join(digits[i:j])
                    cut = len(acc)
                    for jj in range(j - 1, i - 1, -1):
                        if cut < _MIN_PHONE_DIGITS:
                            break
                        if word_end[jj]:
                            e = groups[jj][1]
                            if e < n and text[e] == ")" and text.count("(", s, e) > text.count(")", s, e):
                                e += 1
                            # Dots alone between three or more groups: only
                            # the exact grouping of a national format counts
                            # (versions and addresses are written that way).
                            dotted = jj - i >= 2 and not_dot[jj] == not_dot[i]
                            if _brackets_ok(text, s, e) and self._phone_ok(
                                    plus and i == 0, acc[:cut], tuple(lengths[i : jj + 1]), dotted):
                                found = (jj, e)
                                break
                        cut -= len(digits[jj])
                    if unsettled:
                        # Whether a list starts in it depends on groups still to come.
                        open_start = min(open_start, points[-1])
                        break
                    if found is not None:
                        spans.append((s, found[1]))
                        i = found[0] + 1
                    elif stop == i:
                        i = list_ends[i] or i + 1  # past the list
                    else:
                        i += 1
                while i < k and not word_start[i]:
                    i += 1
                if i < k:
                    g = groups[i][0]
                    points.append(g - 1 if text[g - 1] == "(" else g)
                else:
                    points.append(run_end)
            for a, b in itertools.pairwise(points):
                if a < b:
                    blocked.append((a, b))
        return spans, blocked, open_start

    @staticmethod
    def _barred(text: str, groups: list[tuple[int, int]], word_start: list[bool], lead: str,
                rs: int, run_end: int, versions: list[int]) -> list[bool]:
        """Per group: is it part of something that is not a phone number? A
        whole run-word is barred when it is glued to a letter or a sign at the
        run's ends, is an hour or minute (``12:30``), a thousands group
        (``1,234``), or has the shape of a date, an IPv4 address or a decimal.
        ``versions`` receives the groups barred only as a version in a run
        led by "+" (see :meth:`_phones`)."""
        k = len(groups)
        barred = [False] * k
        words: list[tuple[int, int]] = []  # group index ranges
        for g in range(k):
            if word_start[g]:
                words.append((g, g + 1))
            else:
                words[-1] = (words[-1][0], g + 1)
        first_s, last_e = groups[0][0], groups[-1][1]
        left_glued = not lead and rs > 0 and (
            _is_glue(text[rs - 1]) or (text[rs - 1] in ":," and rs > 1 and text[rs - 2].isdigit())
            # a negative number, the result of an equation: "= -5487112164", "f(1) == 785400427"
            or (text[rs - 1] == "-" and (rs == 1 or text[rs - 2] in " \t\n=(["))
            or _EQUATION_BEFORE.search(text, max(0, rs - 10), rs) is not None
            or _CURRENCY_BEFORE.search(text, max(0, rs - 5), rs) is not None)
        right_glued = run_end < len(text) and (
            _is_glue(text[run_end]) or (text[run_end] in ":," and run_end + 1 < len(text)
                                        and text[run_end + 1].isdigit())
            # a term of an equation or a factor: "20731 - 30111 = -9380", "… - 39639 * 39639"
            or _EQUALS_AFTER.match(text, run_end) is not None)
        for a, b in words:
            s, e = groups[a][0], groups[b - 1][1]
            bad = (left_glued and s == first_s) or (right_glued and e == last_e)
            spelt = False
            if not bad and not (a == 0 and "+" in lead):
                bad = _other_shape(text[s:e])
                # After a "+" and its country code, single digits between
                # dashes or dots are a number spelt out, not a version: for
                # the number that starts at the "+" only (the scan may start
                # afresh after it, without the "+").
                spelt = bad and "+" in lead and not _other_shape(text[s:e], versions=False)
            if bad:
                for g in range(a, b):
                    barred[g] = True
                    if spelt:
                        versions.append(g)
        return barred

    @staticmethod
    def _bar_identifiers(text: str, groups: list[tuple[int, int]], word_start: list[bool],
                         barred: list[bool]) -> None:
        """Bar every run-word with a group inside an identifier code word.
        Each code word is read once (groups inside one share it)."""
        k = len(groups)
        n = len(text)
        cw_end = -1
        ident = False
        for g, (s, _) in enumerate(groups):
            if s >= cw_end:  # a code word not read yet: expand around the group
                a = s
                while a > 0 and text[a - 1] in _CODE_SET:
                    a -= 1
                cw_end = groups[g][1]
                while cw_end < n and text[cw_end] in _CODE_SET:
                    cw_end += 1
                ident = _is_identifier(text[a:cw_end])
            if ident and not barred[g]:
                a = g
                while a > 0 and not word_start[a]:
                    a -= 1
                b = g + 1
                while b < k and not word_start[b]:
                    b += 1
                for h in range(a, b):
                    barred[h] = True

    # ------------------------------------------------------------------ API
    def _scan(self, text: str, final: bool, *, first_only: bool = False) -> Scan:
        if not text:
            return Scan([], 0)
        n = len(text)
        if text.isascii() and _MAYBE_EMAIL.search(text) is None and _DOT_FORMS.search(text) is None \
                and len(text) - len(text.translate(_NO_DIGITS)) < _MIN_PHONE_DIGITS \
                and not _has_number_words(text, final):
            # The common case (plain prose): nothing here can be a finding yet,
            # only the end may still grow into one.
            if final:
                return Scan([], n)
            m = _Mapped(text, [], [])
            open_start = min(_email_open_start(m, []), _operator_tail(text), _spaced_tail(text))
            run = _TRAILING_RUN.search(text, max(0, n - 64))
            if run is not None:
                rs = run.start()
                # The run's judgement will read what stands before it (an
                # amount's sign, the left side of an equation).
                open_start = min(open_start, _context_before(text, rs))
            return Scan([], open_start)
        folded = _fold(text)
        found: list[tuple[int, int, Kind]] = []
        # The obfuscations are read back where an address may be in progress:
        # a dot form alone ("w12[.]r") may still become its local part.
        emails = _email_copy(folded) if _MAYBE_EMAIL.search(folded.text) is not None \
            or _DOT_FORMS.search(folded.text) is not None else folded
        email_spans = _find_emails(emails, text) if emails is not folded or "@" in folded.text else []
        for s, e in email_spans:
            found.append((*emails.finding_span(s, e, n), "email"))
        email_open = n if final else min(emails.original_index(_email_open_start(emails, email_spans), n),
                                         folded.original_index(_spaced_tail(folded.text), n))
        if first_only and found:
            return Scan([PersonalData(k, s, e, text[s:e]) for s, e, k in found[:1]], n)
        digits = folded.sub(_NUMBER_ESCAPES, _unescape_number) \
            if "&" in folded.text or "%" in folded.text or "\\" in folded.text else folded
        if "*" in digits.text:
            digits = digits.sub(_TIMES, _times)
        cut = n
        if not final:
            # An escape still being written ("&#5", "%3") may become a digit or
            # a separator: the phones are scanned as if the text went on there.
            tail = _PARTIAL_NUMBER_ESCAPE.search(digits.text, max(0, len(digits.text) - 16))
            if tail is not None and tail.start() < len(digits.text):
                t = tail.start()
                cut = digits.original_index(t, n)
                digits = _Mapped(digits.text[:t], digits.starts[:t], digits.ends[:t])
        # Digit groups joined by commas, and digits spelt as words: read up to
        # where that reading is settled (all of it once the text is complete).
        bound: list[tuple[int, int]] = []  # original spans no cut may part
        for read in (_read_commas, _read_number_words):
            if read is _read_number_words:
                if not _has_number_words(digits.text, final):
                    continue
                before = digits
                digits, upto, pairs = _read_number_words(digits, final)
                bound.extend(before.original_span(a, b) for a, b in pairs)
            else:
                if "," not in digits.text:
                    continue
                digits, upto = _read_commas(digits, final)
            if upto < len(digits.text):
                # From there on the text is open, with the context a run there
                # would read before it ("USD 987654,…"): no cut may part them.
                cut = min(cut, digits.original_index(_context_before(digits.text, upto), n))
                digits = _Mapped(digits.text[:upto], digits.starts[:upto], digits.ends[:upto])
        phones, blocked_f, phone_open_f = self._phones(digits, final)
        for s, e in phones:
            found.append((*digits.finding_span(s, e, cut), "phone"))
        phone_open = min(cut, digits.original_index(phone_open_f, cut))
        if not final:
            phone_open = min(phone_open, digits.original_index(_operator_tail(digits.text), cut))
        blocked = [digits.original_span(a, b) for a, b in blocked_f if a < b]
        blocked.extend(bound)
        open_start = min(email_open, phone_open)
        found.sort(key=lambda f: (f[0], f[2] != "email", -f[1]))
        out: list[PersonalData] = []
        last_end = -1
        for s, e, kind in found:
            blocked.append((s, e))  # settled or not, no cut may split it
            if s < last_end or (not final and e > open_start):
                continue
            out.append(PersonalData(kind, s, e, text[s:e]))
            last_end = e
        return Scan(out, open_start, blocked)

    def find(self, text: str) -> list[PersonalData]:
        """E-mail addresses and phone numbers in ``text``: sorted by start,
        non-overlapping (an e-mail wins over a phone number inside it)."""
        return self._scan(text, True).findings

    def scan(self, text: str) -> Scan:
        """Like :meth:`find` for a text that may go on (a streaming answer):
        the settled findings, where a finding may still be in progress, and
        the spans a cut must not split. ``find(text)`` and ``scan(text)`` agree
        on every finding before ``open_start``."""
        return self._scan(text, False)

    def refusal_notice(self, text: str) -> str | None:
        """The original client's notice for ``text``: e-mail first, then phone."""
        found = self._scan(text, True, first_only=True).findings
        kinds = {p.kind for p in found}
        if "email" in kinds:
            return EMAIL_NOTICE
        if "phone" in kinds:
            return PHONE_NOTICE
        return None

    def mask(self, text: str) -> str:
        """``text`` with each e-mail replaced by ``[email removed]`` and each
        phone number by ``[phone removed]``."""
        return mask_spans(text, self.find(text))


@functools.lru_cache(maxsize=16)
def detector_for(regions: tuple[str, ...] = DEFAULT_REGIONS) -> PersonalDataDetector:
    """A shared detector for these regions (detectors are immutable)."""
    return PersonalDataDetector(regions)


# --------------------------------------------------------------------------- API
def find_personal_data(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> list[PersonalData]:
    """E-mail addresses and phone numbers in ``text``: sorted by start,
    non-overlapping (an e-mail wins over a phone number inside it)."""
    return detector_for(tuple(regions)).find(text)


def refusal_notice(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> str | None:
    """The original client's notice for ``text``: e-mail first, then phone."""
    return detector_for(tuple(regions)).refusal_notice(text)


def _mask_for(kind: Kind) -> str:
    return EMAIL_MASK if kind == "email" else PHONE_MASK


def mask_spans(
    text: str, spans: list[PersonalData], replace: Callable[[PersonalData], str] | None = None
) -> str:
    """Replace sorted, non-overlapping findings in ``text``."""
    replace = replace or (lambda p: _mask_for(p.kind))
    parts: list[str] = []
    pos = 0
    for p in spans:
        parts.append(text[pos : p.start])
        parts.append(replace(p))
        pos = p.end
    parts.append(text[pos:])
    return "".join(parts)


def mask_personal_data(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> str:
    """``text`` with each e-mail replaced by ``[email removed]`` and each
    phone number by ``[phone removed]``."""
    return detector_for(tuple(regions)).mask(text)
