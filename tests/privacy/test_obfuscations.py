"""
Obfuscated e-mail addresses and phone numbers, generated as classes (every
"@" form with every "." form, every digit form, every separator the module
docstring claims), and what must stay untouched next to them.
"""

from __future__ import annotations

import itertools

import pytest
from chatcore.privacy import find_personal_data, mask_personal_data, structural_ascii
from chatcore.protocol import to_v1_text

AT_FORMS = [
    "@", "\uff20", "\ufe6b", "&#64;", "&#x40;", "&commat;", "&#064;", "%40", "%2540", "&amp;#64;",
    "=40", "\\u0040", "\\x40", " @ ", "@@", " @ @ ", "@\n", "\n@",
    "[at]", "(at)", "{at}", "<at>", "\u00abat\u00bb", "\u201cat\u201d", "'at'", "*at*", "#at#",
    " at ", " AT ", " [at] ", " (at) ", "[@]", "(@)", " at the rate ", " at the rate of ", " atrate ",
    " arroba ", " arobase ", "\u24d0", "\u24b6",
]
DOT_FORMS = [
    ".", "\u3002", "\uff0e", "\uff61", "\ufe52", "&#46;", "&#x2e;", "&period;", "%2E", "=2E",
    " dot ", " DOT ", "[dot]", "(dot)", "{dot}", "<dot>", "[.]", "(.)", " . ",
    "\u00b7", "\u2219", "\u22c5", "-dot-", "_dot_", " punto ", " punkt ",
]


@pytest.mark.parametrize("at", AT_FORMS)
def test_every_at_form_with_every_dot_form_attack_is_one_address(at):
    missed = []
    for dot in DOT_FORMS:
        address = f"john{dot}smith{at}example{dot}com"
        text = f"write to {address} please"
        found = [(p.kind, p.text) for p in find_personal_data(text)]
        if found != [("email", address)]:
            missed.append((address, found))
    assert not missed, missed


@pytest.mark.parametrize("at", AT_FORMS)
def test_every_address_form_is_still_an_address_in_the_original_clients_ascii(at):
    # The server masks v1 answers after transliteration: what anyascii makes of
    # a form ("·" -> "-", "«" -> "<<", "ⓐ" -> "a") must still be found.
    missed = []
    for dot in DOT_FORMS:
        text = to_v1_text(structural_ascii(f"write to john{dot}smith{at}example{dot}com please"))
        if [p.kind for p in find_personal_data(text)] != ["email"] or "smith" in mask_personal_data(text):
            missed.append(text)
    assert not missed, missed


@pytest.mark.parametrize(
    "local",
    ["o'brien", "id=raj", "tom&jerry", "a#b", "x$y", "a^b", "a~b", "dept/sales", "john_smith", "first.last+tag"],
)
def test_a_local_part_with_rfc_5322_characters_attack_is_masked_whole(local):
    text = f"mail {local}@example.com now"
    assert mask_personal_data(text) == "mail [email removed] now"


DIGIT_FORMS = {
    "fullwidth": lambda d: chr(0xFF10 + d),
    "arabic_indic": lambda d: chr(0x660 + d),
    "devanagari": lambda d: chr(0x966 + d),
    "bengali": lambda d: chr(0x9E6 + d),
    "mathematical_bold": lambda d: chr(0x1D7CE + d),
    "double_struck": lambda d: chr(0x1D7D8 + d),
    "circled": lambda d: "\u24ea\u2460\u2461\u2462\u2463\u2464\u2465\u2466\u2467\u2468"[d],
    "dingbat_sans_circled": lambda d: "\U0001f10b" if d == 0 else chr(0x2780 + d - 1),
    "keycap": lambda d: f"{d}\ufe0f\u20e3",
    "underlined": lambda d: f"{d}\u0332",
    "enclosing_circle": lambda d: f"{d}\u20dd",
    "superscript": lambda d: "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"[d],
    "thai": lambda d: chr(0xE50 + d),
    "cjk": lambda d: "\u3007\u4e00\u4e8c\u4e09\u56db\u4e94\u516d\u4e03\u516b\u4e5d"[d],
}


@pytest.mark.parametrize("form", sorted(DIGIT_FORMS))
@pytest.mark.parametrize("number", ["+91 98765 43210", "98765 43210", "(212) 736-5000"])
def test_phone_number_in_every_digit_form_attack_is_masked_without_a_trace(form, number):
    written = "".join(DIGIT_FORMS[form](int(c)) if c.isdigit() else c for c in number)
    text = f"call {written} now"
    assert mask_personal_data(text) == "call [phone removed] now", written


@pytest.mark.parametrize("sep", [" ", "-", ".", "\u2212", "\u2013", "\u2014", "\u2012", "\u00b7",
                                 "\u00a0", "\u2009", "\u202f", "\u3000", "\u200b", "\u2060", "\u00ad"])
def test_phone_number_with_unusual_separators_attack_is_found(sep):
    for written in (f"+91{sep}98765{sep}43210", f"(212){sep}736{sep}5000"):
        text = f"call {written} now"
        assert mask_personal_data(text) == "call [phone removed] now", written


@pytest.mark.parametrize("form", sorted(DIGIT_FORMS))
def test_phone_number_in_every_digit_form_is_still_one_in_the_original_clients_ascii(form):
    written = "".join(DIGIT_FORMS[form](int(c)) if c.isdigit() else c for c in "+91\u221298765\u279643210")
    text = to_v1_text(structural_ascii(f"call {written} now"))
    assert mask_personal_data(text) == "call [phone removed] now", text


@pytest.mark.parametrize("sep", ["-", ".", "\u2212", "\u2013", " "])
def test_international_number_spelt_digit_by_digit_attack_is_found(sep):
    text = f"call +91 {sep.join('9876543210')} now"
    assert mask_personal_data(text) == "call [phone removed] now"


@pytest.mark.parametrize("plus", ["+", "\uff0b", "\ufe62", "\u207a", "\u2795", "00", "011 "])
def test_international_prefix_look_alikes_attack_is_found(plus):
    text = f"call {plus}44 20 7946 0958 now"
    assert mask_personal_data(text) == "call [phone removed] now"


@pytest.mark.parametrize(
    "text",
    [
        "on 2026-12-01 at 12:30", "v10.0.19041", "costs $1,234,567.89", "\u20b9 98,765.43",
        "IP 192.168.100.200", "ISBN 978-3-16-148410-0", "order #9876543210", "invoice INV-2026-000123",
        "UUID 123e4567-e89b-12d3-a456-426614174000", "pi is 3.14159265358979", "at 10:30:45.123",
        "2026-12-01T12:30:00Z", "MAC 00:1A:2B:3C:4D:5E", "version 2.0.1 \u00b7 build 7", "5 \u2212 3 = 2",
        "item \u2022 42", "Hello! Wow? **bold** `code` {x}", "it's 'at' home", "see \u24d0 and \u24d1",
        "mail raj at that point in time", "I'm at home, dot", "stay_at_home.py", "look-at-me",
    ],
)
def test_numbers_and_prose_near_the_new_forms_are_not_personal_data(text):
    assert find_personal_data(text) == [], text


def test_the_forms_combine_linearly_on_long_input():
    # Every new form back to back: the scan stays linear (no blow-up).
    text = "".join(a + d for a, d in itertools.product(AT_FORMS, DOT_FORMS)) * 3
    assert isinstance(find_personal_data(text), list)


# --------------------------------------------------------------------------- third round
#: Every character written between digit groups (ASCII punctuation, Unicode
#: dashes, spaces, bullets, bars, slashes and colons), each as the only
#: separator of a number, also with spaces around it.
GROUP_SEPARATORS = [
    "_", "~", "|", ":", "*", "/", "\\", "'", "\u2022", "\u2023", "\u25e6", "\u2217", "\u2219", "\u22c5",
    "\u2502", "\u2503", "\u2223", "\u00a6", "\u2044", "\u2215", "\u2216", "\u2236", "\uff3f", "\uff5c",
    "\uff1a", "\uff5e", "\u301c", "\uff0a", "\uff0f", "\uff3c", "\ufe63", "\u2010", "\u2011", "\u2015",
    "\u2e3a", "\u2028", "\u2003", "\u205f", "\u1680", "\u00b7", "\u30fb",
]
DOT_LIKE = "\u2219\u22c5\u00b7\u30fb"
STARS = "*\u2217\uff0a"


@pytest.mark.parametrize(
    ("sep", "number"),
    [
        pytest.param(sep, number, id=f"U+{ord(sep):04X}-{number}")
        for sep in GROUP_SEPARATORS
        for number in ["98765{s}43210", "+91{s}98765{s}43210", "212{s}736{s}5000", "+44{s}20{s}7946{s}0958"]
        # Two groups joined by a dot are a decimal number (0.8414709848).
        if not (number == "98765{s}43210" and sep in DOT_LIKE)
    ],
)
def test_phone_number_with_any_group_separator_attack_is_masked(sep, number):
    # A star between spaces multiplies ("20731 * 30111"); glued, it joins groups.
    for s in (sep, f" {sep} ") if sep not in STARS else (sep,):
        written = number.format(s=s)
        text = f"call {written} now"
        assert mask_personal_data(text) == "call [phone removed] now", written


def _html_dec(c: str) -> str:
    return f"&#{ord(c)};"


def _html_hex(c: str) -> str:
    return f"&#x{ord(c):x};"


def _percent(c: str) -> str:
    return f"%{ord(c):02X}"


NUMBER_ESCAPES = {
    "html_decimal": _html_dec,
    "html_hex": _html_hex,
    "html_padded": lambda c: f"&#00{ord(c)};",
    "html_twice": lambda c: f"&amp;#{ord(c)};",
    "percent": _percent,
    "percent_twice": lambda c: f"%25{ord(c):02X}",
    "unicode_escape": lambda c: f"\\u{ord(c):04x}",
    "hex_escape": lambda c: f"\\x{ord(c):02x}",
}


@pytest.mark.parametrize("form", sorted(NUMBER_ESCAPES))
@pytest.mark.parametrize("which", ["digits", "separators", "every_other"])
def test_phone_number_with_escaped_digits_or_separators_attack_is_masked(form, which):
    esc = NUMBER_ESCAPES[form]
    for number in ("+91 98765 43210", "(212) 736-5000"):
        out = []
        for i, c in enumerate(number):
            escape = {"digits": c.isdigit(), "separators": not c.isdigit(), "every_other": i % 2 == 0}[which]
            out.append(esc(c) if escape else c)
        written = "".join(out)
        text = f"call {written} now"
        assert mask_personal_data(text) == "call [phone removed] now", written


@pytest.mark.parametrize("entity", ["&nbsp;", "&ndash;", "&mdash;", "&minus;", "&#8209;", "&#x2011;", "&thinsp;",
                                    "&#32;", "%20", "%2D", "&apos;", "&sol;", "&verbar;", "&lowbar;"])
def test_phone_number_with_named_or_numbered_separator_entities_attack_is_masked(entity):
    text = f"call 98765{entity}43210 or 212{entity}736{entity}5000 now"
    assert mask_personal_data(text) == "call [phone removed] or [phone removed] now", entity


@pytest.mark.parametrize(
    "text",
    [
        "at 10:30-11:45 and 13:00~14:30", "ratio 16:9, 4:3, 21:9", "John 3:16", "score 3:1",
        "int max 2_147_483_647", "1_000_000_000", "1'234'567.89 CHF", "he is 5'10\"",
        "| 2019 | 2020 | 2021 | 2022 |", "3 * 7 * 11 * 13 * 17", "1000 * 1000 * 1000 = 10^9",
        "10.0.0.1:8080 and 192.168.1.100:443", "C:\\Users\\me\\2021\\report.txt",
        "&#169; 2026 &mdash; all rights reserved", "page%201 of 12", "&lt;div&gt;1234&lt;/div&gt;",
        "50% off, 25%20 discount", "\u2022 2026 \u2022 2027 \u2022 2028",
    ],
)
def test_numbers_next_to_the_new_separators_are_not_phone_numbers(text):
    assert find_personal_data(text) == [], text


def _spaced(word: str, gap: str = " ") -> str:
    return gap.join(word)


@pytest.mark.parametrize("gap", [" ", "\t", "\u00a0", "\u2009"])
@pytest.mark.parametrize(
    "form",
    [
        "{l} @ {d} . {t}", "{l}@{d}.{t}", "{l} at {d} dot {t}", "{l} [at] {d} [dot] {t}", "{l} (at) {d} . {t}",
        "{l} arroba {d} punto {t}", "{l}&#64;{d}&#46;{t}",
    ],
)
@pytest.mark.parametrize("spaced", ["local", "domain", "tld", "all"])
def test_letter_spaced_address_attack_is_masked_whole(gap, form, spaced):
    local, domain, tld = "john", "example", "com"
    parts = {
        "l": _spaced(local, gap) if spaced in ("local", "all") else local,
        "d": _spaced(domain, gap) if spaced in ("domain", "all") else domain,
        "t": _spaced(tld, gap) if spaced in ("tld", "all") else tld,
    }
    address = form.format(**parts)
    text = f"write to {address} please"
    assert mask_personal_data(text) == "write to [email removed] please", address


@pytest.mark.parametrize("address", ["j.o.h.n at e x a m p l e dot com", "j-o-h-n at e x a m p l e dot c o m",
                                     "J O H N @ E X A M P L E . C O M", "r a j 9 8 @ g m a i l . c o m"])
def test_letter_spaced_address_mixed_with_other_forms_attack_is_masked(address):
    assert mask_personal_data(f"mail {address} today") == "mail [email removed] today", address


@pytest.mark.parametrize(
    "text",
    [
        "meet at 5 dot com", "see you at 10 dot org", "look at this dot net", "we met at noon dot com",
        "I am at home dot com", "she is at work dot net", "arrive at 9 dot com", "laugh at them dot org",
        "plan a b c then d", "x y z at the end", "grade a at b", "options a, b and c at all",
    ],
)
def test_prose_with_spelt_at_and_dot_is_not_an_address(text):
    assert find_personal_data(text) == [], text


@pytest.mark.parametrize("address", ["john at gmail dot com", "sales at acme dot co dot uk", "raj at 163 dot com",
                                     "mia arroba correo punto es", "john at example dot com"])
def test_spelt_out_address_with_a_plausible_domain_attack_is_still_masked(address):
    assert [p.kind for p in find_personal_data(f"mail {address} now")] == ["email"], address
