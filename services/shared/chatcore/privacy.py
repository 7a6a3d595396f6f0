"""
chatcore.privacy
~~~~~~~~~~~~~~~~

Finds e-mail addresses and phone numbers in free text. The server uses it to
refuse messages and to mask the model's answer; the client uses it to refuse
before anything is sent. It carries the original client's two notices.

What counts (decisions, see tests/moderation/test_privacy.py):

* **Phones** come from :class:`phonenumbers.PhoneNumberMatcher` (region ``IN``,
  leniency ``VALID``), never from a home-made regex. A valid match is reported
  when it is written in international form (``+44 …``, ``(+91) …``, ``0044 …``),
  or nationally with the trunk prefix (``098765 43210``, ``011-2345 6789``), or
  when it is an Indian *mobile* number (``98765 43210``). A bare 10-digit number
  that libphonenumber calls a fixed line (``1234567890``, ``192.168.1.100``) is
  *not* reported: the original client flagged any 10 digits starting 1-9, which
  masked order numbers; Indian mobiles (6-9…) still are, even in an order number.
  Numbers glued to words (``call me9876543210``) are found by separating letter
  runs of two or more from digits first (VALID leniency skips them otherwise).
  National numbers of other countries without ``+`` (``(415) 555-2671``) are not.
* **E-mails** are found by scanning outward from each ``@`` over local-part and
  domain characters: linear time by construction (docs/SECURITY.md §3 measured a
  quadratic regex). The domain needs a dot and a final label of two or more
  letters. Unicode letters are allowed (``राज@उदाहरण.भारत``). Obvious obfuscations
  are caught conservatively: ``name [at] domain [dot] com`` (also ``(at)``,
  ``{at}``, ``<at>``) and spaces around ``@``. Bare words (``name at domain dot
  com``) are *not*: "look at example dot com" is ordinary prose.
* Before either, the text is folded per character (NFKC, Unicode digits to ASCII,
  format characters such as U+200B dropped), keeping a map back to the original,
  so spans always index the caller's text.

Every pass is linear in the input (bounded regex quantifiers, a single ``@``
scan; phonenumbers bounds its own work with ``max_tries``); a 64 KiB message
takes well under a second.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher, PhoneNumberType

__all__ = [
    "EMAIL_MASK",
    "EMAIL_NOTICE",
    "PHONE_MASK",
    "PHONE_NOTICE",
    "PersonalData",
    "find_personal_data",
    "mask_personal_data",
    "refusal_notice",
]

EMAIL_NOTICE = "you are not allowed to share email address with the chat help"
PHONE_NOTICE = "you are not allowed to share phone number with the chat help"

EMAIL_MASK = "[email removed]"
PHONE_MASK = "[phone removed]"

#: libphonenumber's default region for numbers written without a country code.
DEFAULT_REGION = "IN"

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

    def sub(self, pattern: re.Pattern[str], repl: str) -> _Mapped:
        """Replace every match by ``repl``; the replacement maps to the whole
        original span of the match."""
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0
        for m in pattern.finditer(self.text):
            s, e = m.span()
            chars.append(self.text[pos:s])
            starts.extend(self.starts[pos:s])
            ends.extend(self.ends[pos:s])
            chars.append(repl)
            starts.extend([self.starts[s]] * len(repl))
            ends.extend([self.ends[e - 1]] * len(repl))
            pos = e
        if pos == 0:
            return self
        chars.append(self.text[pos:])
        starts.extend(self.starts[pos:])
        ends.extend(self.ends[pos:])
        return _Mapped("".join(chars), starts, ends)


def _fold(text: str) -> _Mapped:
    """NFKC per character, Unicode decimal digits to ASCII, format characters
    (category Cf: zero-width space, soft hyphen, BOM…) dropped.

    Per character, not per string, so the result of a concatenation is the
    concatenation of the results: the streaming answer filter relies on that."""
    if text.isascii():
        n = len(text)
        return _Mapped(text, list(range(n)), list(range(1, n + 1)))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            chars.append(ch)
            starts.append(i)
            ends.append(i + 1)
            continue
        if unicodedata.category(ch) == "Cf":
            continue
        for c in unicodedata.normalize("NFKC", ch):
            if not c.isascii():
                d = unicodedata.decimal(c, None)
                if d is not None:
                    c = str(d)
            chars.append(c)
            starts.append(i)
            ends.append(i + 1)
    return _Mapped("".join(chars), starts, ends)


# --------------------------------------------------------------------------- e-mail
# Bounded quantifiers only: each alternative matches at most a few characters,
# so a search is linear however the input is built.
_AT_OBFUSCATION = re.compile(
    r"[ \t]{0,3}[\[({<][ \t]{0,2}at[ \t]{0,2}[\])}>][ \t]{0,3}"  # name [at] domain
    r"|[ \t]{1,3}@[ \t]{0,3}|@[ \t]{1,3}",  # name @ domain
    re.IGNORECASE,
)
_DOT_OBFUSCATION = re.compile(r"[ \t]{0,3}[\[({<][ \t]{0,2}dot[ \t]{0,2}[\])}>][ \t]{0,3}", re.IGNORECASE)
_LOCAL_PUNCT = frozenset("._%+-")


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


def _find_emails(folded: _Mapped) -> list[tuple[int, int]]:
    m = folded.sub(_AT_OBFUSCATION, "@").sub(_DOT_OBFUSCATION, ".")
    text = m.text
    n = len(text)
    spans: list[tuple[int, int]] = []
    at = text.find("@")
    while at != -1:
        # Local part: back over local characters. '@' is not one, so the runs
        # scanned for successive '@'s are disjoint: linear overall.
        s = at
        while s > 0 and _is_local_char(text[s - 1]):
            s -= 1
        while s < at and text[s] in _LOCAL_PUNCT:
            s += 1
        e = at + 1
        while e < n and _is_domain_char(text[e]):
            e += 1
        length = _domain_length(text[at + 1 : e]) if s < at else 0
        if length:
            end = at + 1 + length
            spans.append(m.original_span(s, end))
            at = text.find("@", end)
        else:
            at = text.find("@", at + 1)
    return spans


# --------------------------------------------------------------------------- phone
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_OPENERS = "([{ "


def _alpha_run_lengths(text: str) -> tuple[list[int], list[int]]:
    """For each index, the length of the run of letters ending there (left) and
    starting there (right)."""
    n = len(text)
    left = [0] * n
    right = [0] * n
    run = 0
    for i, ch in enumerate(text):
        run = run + 1 if ch.isalpha() else 0
        left[i] = run
    run = 0
    for i in range(n - 1, -1, -1):
        run = run + 1 if text[i].isalpha() else 0
        right[i] = run
    return left, right


def _unglue(folded: _Mapped) -> _Mapped:
    """Put a space between a word of two or more letters and digits glued to
    it (``me9876543210`` -> ``me 9876543210``): VALID leniency deliberately skips
    numbers touching Latin letters. Single letters stay glued (hashes, ``A55``)."""
    text = folded.text
    if not any(c.isdigit() for c in text):
        return folded
    left, right = _alpha_run_lengths(text)
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    prev = ""
    for i, ch in enumerate(text):
        if i and (
            (left[i - 1] >= 2 and (ch.isdigit() or ch == "+"))
            or (prev.isdigit() and right[i] >= 2)
        ):
            chars.append(" ")
            starts.append(folded.starts[i])
            ends.append(folded.starts[i])
        chars.append(ch)
        starts.append(folded.starts[i])
        ends.append(folded.ends[i])
        prev = ch
    return _Mapped("".join(chars), starts, ends)


def _is_reportable(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    written = raw.lstrip(_OPENERS)
    if written.startswith("+"):
        return True  # international form: VALID for its own country
    digits = "".join(c for c in written if c.isdigit())
    if digits.startswith("0"):
        return True  # trunk prefix (0…) or international prefix (00…)
    return phonenumbers.number_type(number) in _MOBILE_TYPES


def _find_phones(folded: _Mapped) -> list[tuple[int, int]]:
    text = folded.text
    if sum(c.isdigit() for c in text) < 5:
        # Cheap exit. The shortest valid numbers (+43 and a 4-digit national
        # number) have 6 digits; the bound must hold per match, not per text,
        # or masking a text in pieces would differ from masking it whole.
        return []
    m = _unglue(folded)
    spans = []
    for match in PhoneNumberMatcher(m.text, DEFAULT_REGION, leniency=Leniency.VALID):
        if _is_reportable(match.raw_string, match.number):
            spans.append(m.original_span(match.start, match.end))
    return spans


# --------------------------------------------------------------------------- API
def find_personal_data(text: str) -> list[PersonalData]:
    """E-mail addresses and phone numbers in ``text``: sorted by start,
    non-overlapping (an e-mail wins over a phone number inside it)."""
    if not text:
        return []
    folded = _fold(text)
    found: list[tuple[int, int, Kind]] = [(s, e, "email") for s, e in _find_emails(folded)]
    found += [(s, e, "phone") for s, e in _find_phones(folded)]
    found.sort(key=lambda f: (f[0], f[2] != "email", -f[1]))
    out: list[PersonalData] = []
    last_end = -1
    for s, e, kind in found:
        if s < last_end:
            continue
        out.append(PersonalData(kind, s, e, text[s:e]))
        last_end = e
    return out


def refusal_notice(text: str) -> str | None:
    """The original client's notice for ``text``: e-mail first, then phone."""
    kinds = {p.kind for p in find_personal_data(text)}
    if "email" in kinds:
        return EMAIL_NOTICE
    if "phone" in kinds:
        return PHONE_NOTICE
    return None


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


def mask_personal_data(text: str) -> str:
    """``text`` with each e-mail replaced by ``[email removed]`` and each phone
    number by ``[phone removed]``."""
    return mask_spans(text, find_personal_data(text))
