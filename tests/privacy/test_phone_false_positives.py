"""chatcore.privacy: what is NOT a phone number, as properties over generated
identifiers, dates, addresses and numbers, and over a corpus of ordinary
sentences with numbers in them. The other side (what must be found) is in
test_privacy.py; the last test here checks it for every configured region
from libphonenumber's own example numbers."""

from __future__ import annotations

import base64
import datetime
import hashlib

import phonenumbers
import pytest
from chatcore.privacy import DEFAULT_REGIONS, PersonalDataDetector, find_personal_data
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=400, deadline=None)


def phones(text: str) -> list[str]:
    return [p.text for p in find_personal_data(text) if p.kind == "phone"]


def in_sentence(token: str) -> list[str]:
    """The token alone, in a sentence, and glued to punctuation."""
    return [token, f"see {token} here", f"({token}),", f"id: {token}."]


def assert_no_phone(token: str) -> None:
    for text in in_sentence(token):
        assert phones(text) == [], text


# --------------------------------------------------------------------------- identifiers
digests = st.binary(max_size=64).map(lambda b: hashlib.sha256(b).digest())


@SETTINGS
@given(u=st.uuids())
def test_uuids_are_never_phone_numbers(u):
    for form in (str(u), u.hex, str(u).upper(), "{" + str(u) + "}", f"urn:uuid:{u}"):
        assert_no_phone(form)


@SETTINGS
@given(d=digests, length=st.integers(min_value=6, max_value=64))
def test_hex_tokens_hashes_and_git_shas_are_never_phone_numbers(d, length):
    token = d.hex()[:length]
    # A hex token is an identifier when it has a letter in it; one of up to 8
    # characters is too short for any number written without "+".
    if len(token) <= 8 or any(c in "abcdef" for c in token):
        assert_no_phone(token)
        assert_no_phone(token.upper())
        assert_no_phone(f"commit {token[:7]}")


@SETTINGS
@given(d=digests, length=st.integers(min_value=8, max_value=43))
def test_base64_and_url_safe_tokens_are_never_phone_numbers(d, length):
    assert_no_phone(base64.urlsafe_b64encode(d).decode().rstrip("=")[:length])
    assert_no_phone(base64.b64encode(d).decode()[:length])
    assert_no_phone("sk-" + base64.urlsafe_b64encode(d).decode().rstrip("="))


@SETTINGS
@given(d=digests, short=st.sampled_from([3, 6, 8]))
def test_hex_colours_are_never_phone_numbers(d, short):
    assert_no_phone("#" + d.hex()[:short])


@SETTINGS
@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=8))
def test_no_run_of_up_to_eight_digits_is_a_phone_number(digits):
    # The shortest number written without "+" in the default regions has nine
    # significant digits (Australia, France, Spain); ids, counts and years are
    # shorter. With "+", a short number counts (see test_privacy.py).
    assert_no_phone(digits)


@SETTINGS
@given(
    prefix=st.sampled_from(["INV", "ORD", "INV-2026-", "ORD-", "order #", "#", "SKU_", "id=", "/orders/", "A"]),
    number=st.integers(min_value=6_000_000_000, max_value=9_999_999_999),
)
def test_order_and_invoice_numbers_glued_to_letters_or_signs_are_never_phone_numbers(prefix, number):
    # The same ten digits alone would be an Indian mobile number.
    assert_no_phone(f"{prefix}{number}")


# --------------------------------------------------------------------------- dates, times
DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d/%m/%y",
                "%Y%m%d", "%d %b %Y"]
DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M",
                    "%d.%m.%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y%m%dT%H%M%S"]
dates = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2100, 12, 31))
datetimes = st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2100, 12, 31))


@SETTINGS
@given(d=dates, fmt=st.sampled_from(DATE_FORMATS), count=st.integers(min_value=0, max_value=99))
def test_dates_are_never_phone_numbers(d, fmt, count):
    assert_no_phone(d.strftime(fmt))
    assert_no_phone(f"on {d.strftime(fmt)} {count} people came")


@SETTINGS
@given(t=datetimes, fmt=st.sampled_from(DATETIME_FORMATS))
def test_date_times_and_times_are_never_phone_numbers(t, fmt):
    assert_no_phone(t.strftime(fmt))
    assert_no_phone(t.isoformat())
    assert_no_phone(f"{t:%H:%M:%S} and {t:%H:%M}")


# --------------------------------------------------------------------------- addresses, versions
@SETTINGS
@given(ip=st.ip_addresses(v=4), port=st.integers(min_value=1, max_value=65535),
       bits=st.integers(min_value=0, max_value=32))
def test_ipv4_addresses_ports_and_networks_are_never_phone_numbers(ip, port, bits):
    assert_no_phone(str(ip))
    assert_no_phone(f"{ip}:{port}")
    assert_no_phone(f"{ip}/{bits}")
    assert_no_phone(f"http://{ip}:{port}/")


@SETTINGS
@given(ip=st.ip_addresses(v=6))
def test_ipv6_addresses_are_never_phone_numbers(ip):
    assert_no_phone(str(ip))
    assert_no_phone(ip.exploded)


@SETTINGS
@given(
    major=st.integers(min_value=0, max_value=99), minor=st.integers(min_value=0, max_value=99),
    patch=st.integers(min_value=0, max_value=999), build=st.integers(min_value=0, max_value=99999),
    form=st.sampled_from(["{a}.{b}.{c}", "v{a}.{b}.{c}", "{a}.{b}.{c}-rc.{d}", "{a}.{b}.{c}.{d}",
                          "{a}.{b}", "version {a}.{b}.{c} (build {d})"]),
)
def test_version_strings_are_never_phone_numbers(major, minor, patch, build, form):
    assert_no_phone(form.format(a=major, b=minor, c=patch, d=build))


# --------------------------------------------------------------------------- quantities
@SETTINGS
@given(x=st.floats(allow_nan=False, allow_infinity=False), places=st.integers(min_value=1, max_value=15))
def test_decimal_numbers_are_never_phone_numbers(x, places):
    assert_no_phone(repr(x))
    assert_no_phone(f"{x:.{places}f}")
    assert_no_phone(f"{x:.{places}e}")


@SETTINGS
@given(amount=st.integers(min_value=0, max_value=10**13), sign=st.sampled_from(["$", "€", "£", "₹", "Rs. "]))
def test_money_amounts_are_never_phone_numbers(amount, sign):
    whole, cents = divmod(amount, 100)
    us = f"{whole:,}.{cents:02d}"
    assert_no_phone(f"{sign}{us}")
    assert_no_phone(f"{us} USD")
    eu = us.replace(",", " ").replace(".", ",").replace(" ", ".")  # 1.234.567,89
    assert_no_phone(f"{eu} €")
    assert_no_phone(f"{sign}{whole}")


@SETTINGS
@given(a=st.integers(min_value=0, max_value=10**8), b=st.integers(min_value=0, max_value=10**8),
       i=st.integers(min_value=0, max_value=10**8))
def test_code_with_numbers_is_never_phone_numbers(a, b, i):
    assert_no_phone(f"x = values[{i}] * {a} + {b}")
    assert_no_phone(f"arr[{i}][{a}]")
    assert_no_phone(f"f({a}, {b})")
    assert_no_phone(f"0x{a:x}")
    assert_no_phone(f"localhost:{b % 65536}")


# --------------------------------------------------------------------------- a corpus
ORDINARY = [
    "The population of India was 1,428,627,663 in 2023, up from 1,417,173,173.",
    "The Moon is 384,400 km away; light needs 1.28 seconds.",
    "Avogadro's number is 6.02214076e23 and pi is 3.14159265358979.",
    "sin(1) is about 0.8414709848078965.",
    "The budget for 2024-25 is Rs. 48,20,512 crore.",
    "It costs $1,299.99, or €1.234,50 in Germany.",
    "Flight AI 302 leaves at 10:45 from gate 23 on 2026-12-01.",
    "Meet me on 01/12/2026 at 14:30 in room 1204.",
    "The server at 192.168.100.200:8080 answered in 12.5 ms.",
    "Pull request #123456789 fixed issue #98765.",
    "Commit 0535096e4b1a77c2 reverted 7a3f9b2.",
    "The request id was 550e8400-e29b-41d4-a716-446655440000.",
    "Download version 10.0.19041.1234 (build 19045.3693).",
    "ISBN 978-3-16-148410-0 and ISBN-13 9780306406157.",
    "Python 3.11.7 on Windows 10.0.19041.",
    "Order INV-2026-000123 was shipped; tracking TRK9876543210.",
    "The token sk-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c expired.",
    "Use the colour #ff5733 or #0535096.",
    "The sum 1234567 + 7654321 is 8888888.",
    "In 1947, 1950 and 1991 the country changed.",
    "Years: 2019 2020 2021 2022 2023 2024 2025.",
    "Scores were 3-1, 2-0 and 4-2.",
    "The PIN code is 560001 and the ZIP is 94105-1234.",
    "Latitude 12.9716, longitude 77.5946.",
    "The file is 1 048 576 bytes; 52 428 800 bytes is 50 MiB.",
    "Unix time 1733059845 is in December 2024.",
    "Block 840000 halved the reward to 3.125 BTC.",
    "Chapter 12, verses 34 to 56.",
    "It grew 12.5% to 98765.43210 units.",
    "HTTP 404 at https://example.com/orders/9876543210?page=2.",
    "Set timeout=9876543210 and retries=3.",
    "The matrix is [[1, 2, 3], [4, 5, 6], [7, 8, 9]].",
    "for i in range(1000000000): total += i * 2",
    "Serial number SN-2041-7781-0035.",
    "The IPv6 address is 2001:db8::ff00:42:8329.",
    "Windows build 22631.2861 installed on 2024-01-09 03:12:45.",
    "A sha256 of e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.",
    "Between 09:00-17:30, Monday to Friday.",
    "The ratio 16:9 and the scale 1:50000.",
    "About 8.1 billion people, 7.9e9 in 2021.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_sentences_with_numbers_have_no_phone_numbers(text):
    assert phones(text) == []


# --------------------------------------------------------------------------- and what stays found
FORMATS = [phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
           phonenumbers.PhoneNumberFormat.E164]
TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]


@pytest.mark.parametrize("region", DEFAULT_REGIONS)
def test_every_configured_regions_example_numbers_are_found_in_every_format(region):
    # libphonenumber's example mobile and landline numbers, as the region
    # writes them, internationally and in E.164: whatever the rules above
    # exclude, a real number is still found.
    detector = PersonalDataDetector((region,))
    for kind in TYPES:
        number = phonenumbers.example_number_for_type(region, kind)
        for fmt in FORMATS:
            written = phonenumbers.format_number(number, fmt)
            assert [p.text for p in detector.find(f"call {written} now")] == [written], (kind, written)


# --------------------------------------------------------------------------- lists of numbers
ROUND_STEPS = [*range(1, 11), 15, 20, 25, 50, 100, 250, 500, 1000]


def _written(terms: list[int], joiner: str) -> str:
    return joiner.join(map(str, terms))


@SETTINGS
@given(start=st.integers(min_value=0, max_value=3000), step=st.sampled_from(ROUND_STEPS),
       count=st.integers(min_value=5, max_value=40), down=st.booleans(),
       joiner=st.sampled_from([" ", ", ", "  ", " | ", "\t", " - ", ",", " * "]))
def test_counting_lists_with_a_round_step_are_never_phone_numbers(start, step, count, down, joiner):
    terms = [start + step * n for n in range(count)]
    if down:
        terms.reverse()
    if max(terms) < 10:
        return  # single digits spaced out are how a phone number is spelt (below)
    text = _written(terms, joiner)
    for sentence in (text, f"the values are {text}.", f"[{text}]"):
        assert phones(sentence) == [], sentence


def _fibonacci(a: int, b: int, n: int) -> list[int]:
    out = [a, b]
    while len(out) < n:
        out.append(out[-1] + out[-2])
    return out


def _primes_from(lo: int, n: int) -> list[int]:
    out: list[int] = []
    k = max(lo, 2)
    while len(out) < n:
        if all(k % p for p in range(2, int(k**0.5) + 1)):
            out.append(k)
        k += 1
    return out


SEQUENCES = {
    "squares": lambda s, n: [k * k for k in range(s + 1, s + 1 + n)],
    "cubes": lambda s, n: [k**3 for k in range(s + 2, s + 2 + n)],
    "triangular": lambda s, n: [k * (k + 1) // 2 for k in range(s + 1, s + 1 + n)],
    "powers_of_two": lambda s, n: [2**k for k in range(s % 8, s % 8 + n)],
    "powers_of_three": lambda s, n: [3**k for k in range(s % 5, s % 5 + n)],
    "fibonacci": lambda s, n: _fibonacci(s % 5 + 1, s % 5 + 2, n),
    "primes": lambda s, n: _primes_from(s, n),
    "doubling_from": lambda s, n: [(s + 1) * 2**k for k in range(n)],
}


@SETTINGS
@given(kind=st.sampled_from(sorted(SEQUENCES)), start=st.integers(min_value=0, max_value=60),
       count=st.integers(min_value=6, max_value=20), joiner=st.sampled_from([" ", ", ", " | ", "  "]))
def test_mathematical_sequences_are_never_phone_numbers(kind, start, count, joiner):
    terms = SEQUENCES[kind](start, count)
    text = _written(terms, joiner)
    if len({len(str(t)) for t in terms}) == 1 and min(terms) < 10:
        return  # single digits: nothing tells them from a number spelt digit by digit
    for sentence in (text, f"{kind}: {text}, and so on"):
        assert phones(sentence) == [], sentence


@pytest.mark.parametrize(
    "text",
    [
        "1 2 3 4 5 6 7 8 9 10", "0 1 2 3 4 5 6 7 8 9 10 11 12", "10 9 8 7 6 5 4 3 2 1", "1 4 9 16 25 36 49 64 81 100",
        "1 1 2 3 5 8 13 21 34 55 89 144", "2 3 5 7 11 13 17 19 23 29 31 37", "1 2 4 8 16 32 64 128 256 512 1024",
        "20 21 22 23 24 25 26 27 28 29 30", "2020 2021 2022 2023 2024 2025", "100 200 300 400 500 600 700",
        "1 3 6 10 15 21 28 36 45 55", "Chapter 1 2 3 4 5 6 7 8 9 10 11 12 13",
    ],
)
def test_the_reported_counting_lists_are_not_phone_numbers(text):
    assert phones(text) == [], text


@pytest.mark.parametrize(
    "text",
    [
        "9 8 7 6 5 4 3 2 1 0",  # a number spelt digit by digit
        "98 76 54 32 10",  # in pairs: a step of 22 is a digit pattern, not counting
        "+1 2 3 4 5 6 7 8 9 10",  # after "+" and a country code it is a number
        "9 12 34 56 789 0",  # not monotonic
        "list 1 2 3 then 98765 43210",  # a number after a list
        "1 2 3 4 5 6 7 8 9 10 98765 43210",  # a number right after a list
    ],
)
def test_phone_numbers_written_like_lists_are_still_found(text):
    assert phones(text) != [], text


# --------------------------------------------------------------------------- arithmetic
@SETTINGS
@given(a=st.integers(min_value=100, max_value=99999), b=st.integers(min_value=100, max_value=99999),
       op=st.sampled_from([" * ", " - ", " + ", " \u00d7 ", " / "]), spaced=st.booleans())
def test_arithmetic_with_its_result_is_never_a_phone_number(a, b, op, spaced):
    result = {" * ": a * b, " \u00d7 ": a * b, " - ": a - b, " + ": a + b, " / ": a // max(b, 1)}[op]
    eq = " = " if spaced else "="
    for text in (f"{a}{op}{b}{eq}{result}", f"so {a}{op}{b}{eq}{result}.", f"f({a}) == {a * b}",
                 f"{a} * {a} - {b} * {b}{eq}{a * a - b * b}", f"the result is -{a * b}"):
        if op == " / " and text.startswith(f"{a} / {b}"):
            continue  # "212 / 736-5000" is how Germans write a phone number
        assert phones(text) == [], text


@pytest.mark.parametrize("text", ["phone = 98765 43210", "call 98765*43210", "tel 212 736 5000 = office",
                                  "x: +91 98765 43210", "* 98765 43210", "- 98765 43210"])
def test_a_phone_number_next_to_an_operator_sign_is_still_found(text):
    assert phones(text) != [], text
