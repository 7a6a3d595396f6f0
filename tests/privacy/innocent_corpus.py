"""Number-heavy text of the kind a model writes in answers (maths, tables,
timetables, code, prices, dates, versions), generated deterministically. None
of it holds an e-mail address or a phone number: tests/privacy/
test_innocent_corpus.py checks that it comes out unmasked.

Since the fourth round it also holds prose full of number words (recipes,
counting, ranges, in four languages), code with the constants of programs
(``2147483647``, ``2**n``, ``10**n - 1``) and Russian, Ukrainian and Greek text.

Left out on purpose (docs/SECURITY.md §3): a bare number of 10 digits that is
a valid number where it stands alone and is no constant of programs
("determinant 2156692860"): nothing but the context of words tells it from a
phone number."""

from __future__ import annotations

import ipaddress
import random
import uuid

SEED = 20261202


def _multiplication_tables(rng: random.Random) -> list[str]:
    out = []
    for n in range(1, 26):
        row = " | ".join(str(n * k) for k in range(1, 13))
        out.append(f"| {row} |")
        out.append(" ".join(str(n * k) for k in range(1, 13)))
        out.append(", ".join(str(n * k) for k in range(1, 11)))
        out.append("\n".join(f"{n} x {k} = {n * k}" for k in range(1, 11)))
    return out


def _sequences(rng: random.Random) -> list[str]:
    out = []
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    primes = [p for p in range(2, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]
    for start in range(0, 40, 3):
        out.append("The first squares: " + " ".join(str(k * k) for k in range(start, start + 12)))
        out.append("Cubes: " + " ".join(str(k**3) for k in range(start, start + 8)))
        out.append("Triangular numbers: " + " ".join(str(k * (k + 1) // 2) for k in range(start, start + 12)))
        out.append("Primes: " + " ".join(map(str, primes[start : start + 15])))
        out.append("Fibonacci: " + " ".join(map(str, fib[start % 20 : start % 20 + 10])))
        out.append("Powers of two: " + " ".join(str(2**k) for k in range(start % 20, start % 20 + 11)))
        out.append("Counting: " + " ".join(str(k) for k in range(start, start + 15)))
        out.append("Countdown: " + " ".join(str(k) for k in range(start + 15, start, -1)))
        out.append("Evens: " + " ".join(str(2 * k) for k in range(start, start + 12)))
        out.append("By fives: " + " ".join(str(5 * k) for k in range(start, start + 12)))
        out.append("Years " + " ".join(str(1990 + start + k) for k in range(10)))
    return out


def _timetables(rng: random.Random) -> list[str]:
    out = []
    for _ in range(40):
        h, m = rng.randint(5, 9), rng.choice([0, 5, 10, 15, 20])
        times = []
        for _ in range(8):
            times.append(f"{h:02d}:{m:02d}")
            m += rng.choice([15, 20, 30])
            h, m = h + m // 60, m % 60
        out.append("Departures: " + " ".join(times))
        out.append("| " + " | ".join(times) + " |")
        out.append(f"Train {rng.randint(100, 999)} leaves at {times[0]} and arrives at {times[-1]}, "
                   f"platform {rng.randint(1, 12)}.")
        out.append(f"Open {times[0]}-{times[3]} and {times[4]}~{times[7]}")
    return out


def _code(rng: random.Random) -> list[str]:
    out = []
    for _ in range(60):
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        port = rng.randint(1, 65535)
        u = uuid.UUID(int=rng.getrandbits(128), version=4)
        out.append(f"curl http://{ip}:{port}/api/v1/items/{rng.randint(1, 10**9)}")
        out.append(f"server = ('{ip}', {port})  # id {u}")
        out.append(f"color = 0x{rng.getrandbits(24):06x}; mask = 0b{rng.getrandbits(12):012b}")
        out.append(f"MAX = {rng.choice([2**32, 10**9 + 7, 998244353])}  # 2**31 - 1 == 2_147_483_647")
        out.append(f"arr[{rng.randint(0, 99)}][{rng.randint(0, 99)}] = {rng.randint(0, 10**6)}")
        out.append(f"for i in range({rng.randint(0, 10)}, {rng.randint(100, 10**6)}, {rng.randint(1, 10)}):")
        out.append(f"assert f({rng.randint(1, 99)}) == {rng.randint(10**6, 10**9)}")
        out.append(f"ts = {rng.randint(1_600_000_000, 1_800_000_000)}.{rng.randint(0, 999):03d}")
        out.append(f"sha = '{rng.getrandbits(160):040x}'")
        out.append(f"np.array([[{rng.randint(0, 9)}, {rng.randint(0, 9)}], [{rng.randint(0, 9)}, {rng.randint(0, 9)}]])")
        out.append(f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}%eth0 and 2001:db8::{rng.getrandbits(16):x}")
    return out


def _prices_and_amounts(rng: random.Random) -> list[str]:
    out = []
    for _ in range(60):
        a = rng.randint(1000, 10**9)
        out.append(f"Revenue rose to ${a:,} ({rng.randint(1, 99)}.{rng.randint(0, 9)}%) in {rng.randint(1990, 2030)}.")
        out.append(f"Price: \u20ac{a / 100:,.2f} or \u20b9 {a:,} or Rs. {a}")
        out.append(f"The population is {a:,} ({a:_} in Python, {a:,}".replace(",", "'") + " in Switzerland)")
        out.append(f"Total: {rng.randint(1, 999)}.{rng.randint(0, 99):02d} USD; tax {rng.randint(1, 30)}%")
    return out


def _dates_versions_ids(rng: random.Random) -> list[str]:
    out = []
    for _ in range(60):
        y, mo, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        out.append(f"On {y}-{mo:02d}-{d:02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
                   f" ({d:02d}/{mo:02d}/{y}, {d}.{mo}.{y})")
        out.append(f"Python {rng.randint(2, 3)}.{rng.randint(0, 13)}.{rng.randint(0, 20)}, "
                   f"Windows 10.0.{rng.randint(10000, 22631)}.{rng.randint(1, 4000)}")
        out.append(f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-{rng.randint(0, 9)}")
        out.append(f"Order #{rng.randint(10**7, 10**10)} shipped; invoice INV-{y}-{rng.randint(0, 99999):05d}")
        out.append(f"Coordinates {rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}")
        out.append(f"Score {rng.randint(0, 5)}-{rng.randint(0, 5)}; ratio {rng.randint(1, 21)}:{rng.randint(1, 10)}")
    return out


def _maths(rng: random.Random) -> list[str]:
    out = [
        "pi = 3.14159265358979323846264338327950288", "e = 2.71828182845904523536028747135266249",
        "sqrt(2) = 1.41421356237309504880168872420969807", "2^10 = 1024, 2^20 = 1048576, 2^30 = 1073741824",
        "10! = 3628800, 12! = 479001600, 13! = 6227020800", "Avogadro: 6.02214076e23",
    ]
    for _ in range(60):
        a, b = rng.randint(100, 99999), rng.randint(100, 99999)
        out.append(f"{a} * {b} = {a * b}")
        out.append(f"{a} + {b} = {a + b}; {a} - {b} = {a - b}")
        out.append(f"the matrix [[{a}, {b}], [{b}, {a}]] has determinant {a} * {a} - {b} * {b} = {a * a - b * b}")
        out.append(f"x = {rng.uniform(0, 1000):.6f}, y = {rng.uniform(0, 1000):.6f}")
    return out


_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number_word_prose(rng: random.Random) -> list[str]:
    """Prose full of number words: recipes, counting, ranges, scores, dates
    and times said in words, in English, Spanish, French and German."""
    out = []
    for _ in range(60):
        a, b, c = rng.sample(_UNITS[1:], 3)
        t1, t2 = rng.sample(_TENS, 2)
        u = rng.choice(_UNITS[1:])
        out.append(f"Add {a} eggs, {b} cups of flour and {c} tablespoons of sugar; bake for {t1}-{u} to "
                   f"{t2} minutes, then rest for {a} or {b} minutes.")
        out.append(f"{a.capitalize()}, {b}, {c}, go! It takes {a} to {c} days, maybe {t1} at most.")
        # (Down to "zero" it would spell 9876543210 digit by digit, as "9 8 7 … 0" does.)
        out.append(" ".join(_UNITS[1:]) + " ten, and back: ten, " + ", ".join(reversed(_UNITS[1:])) + ", liftoff")
        out.append(f"The score was {a}-{b}, then {b}-{c}; after {t1}-{u} minutes it was {c}-{a}.")
        out.append(f"We met on the {t1}-{u}th at {a} o'clock and stayed {b} or {c} hours; oh, {a} more thing.")
        out.append(f"Chapter {a}, section {b}, step {c}: repeat {t1}-{u} times, then {t2} more.")
        out.append(f"uno, dos, tres, cuatro, cinco; {rng.choice(['cinco', 'seis', 'siete'])} o {rng.choice(['ocho', 'nueve'])} "
                   f"d\u00edas. un, deux, trois, quatre, cinq; eins, zwei, drei, vier, f\u00fcnf.")
        out.append(f"In {t1} {a} hundred and {t2}-{u}, {b} ships and {c} boats sailed for {t1} days.")
    return out


def _code_constants(rng: random.Random) -> list[str]:
    """Code blocks with the constants programs use: limits of integer types,
    masks, powers of ten."""
    out = []
    for _ in range(40):
        n = rng.randint(31, 63)
        out.append(f"```c\n#define LIMIT {2**n - 1}\nconst long MASK = {2**n};\nint x = {2**31 - 1};\n```")
        out.append(f"```python\nMAX_ID = {2**n - 1}\nx = {2**32 - 1}\nBIG = {10**rng.randint(9, 15)}\n"
                   f"NINES = {10**rng.randint(9, 15) - 1}\n```")
        out.append(f"INT_MAX = 2147483647; UINT_MAX = 4294967295; 2**{n} = {2**n}")
    return out


def _other_scripts(rng: random.Random) -> list[str]:
    """Russian, Ukrainian and Greek prose with numbers (for the banned-word
    readings of mixed words and the number readings alike)."""
    base = [
        "\u041c\u0430\u0439\u043a \u043f\u043e\u0437\u0432\u043e\u043d\u0438\u043b \u0432 {a} \u0447\u0430\u0441\u043e\u0432, "
        "\u0446\u0435\u043d\u0430 {b} \u0440\u0443\u0431\u043b\u0435\u0439, \u043a\u043e\u0434 {c}.",
        "\u0429\u043e\u0434\u043d\u044f \u043e {a}:00 \u0457\u0437\u0434\u0438\u0442\u044c {b} \u043f\u043e\u0457\u0437\u0434\u0456\u0432.",
        "\u0397 \u03c6\u03c9\u03c4\u03b9\u03ac \u03ba\u03ac\u03b7\u03ba\u03b5 {a} \u03c3\u03c0\u03af\u03c4\u03b9\u03b1 \u03c3\u03c4\u03b9\u03c2 {b}:{c:02d}.",
    ]
    out = []
    for _ in range(30):
        for t in base:
            out.append(t.format(a=rng.randint(1, 24), b=rng.randint(100, 99999), c=rng.randint(0, 59)))
    return out


def corpus() -> list[str]:
    """The documents: every category, in a fixed order (same on every run)."""
    rng = random.Random(SEED)
    docs: list[str] = []
    for make in (_multiplication_tables, _sequences, _timetables, _code, _prices_and_amounts,
                 _dates_versions_ids, _maths, _number_word_prose, _code_constants, _other_scripts):
        docs.extend(make(rng))
    return docs
