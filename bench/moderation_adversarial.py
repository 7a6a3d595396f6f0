"""Time of the moderation detectors on 64 KiB adversarial inputs (docs/SECURITY.md
§3, §4: a filter that is slow on hostile input is a denial of service).

    .venv/bin/python -m bench.moderation_adversarial

For each input: the banned-word matcher (``find``), the personal-data detector
(``find``) and the streaming answer filter fed 256-character slices, in
milliseconds (best of three). Compare runs of two versions on the same machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

N = 65536

INPUTS = {
    "prose": ("the quick brown fox jumps over the lazy dog and runs away " * 2000)[:N],
    "prose with number words": ("the quick brown fox jumps over the lazy dog one two three " * 2000)[:N],
    "digits": ("98765 " * 11000)[:N],
    "single digits": ("1 " * 33000)[:N],
    "bars": "|" * N,
    "bar-dash": ("|-" * 33000)[:N],
    "slashes": ("|\\/" * 22000)[:N],
    "vvv": ("vvv " * 17000)[:N],
    "ph": ("ph" * 33000)[:N],
    "parens": ("()" * 33000)[:N],
    "cyrillic-latin": ("\u0448a" * 33000)[:N],
    "number words": ("nine eight seven six " * 4000)[:N],
    "number words, commas": ("one, two, three, " * 4000)[:N],
    "comma digits": ("987,654,3210," * 6000)[:N],
    "spaced letters": ("j  o  " * 11000)[:N],
    "spaced at": ("j o h n @ " * 7000)[:N],
}


def _best(fn) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    from chat_server.moderation import AnswerFilter, BannedWords
    from chatcore.privacy import detector_for

    banned = BannedWords.from_file(os.environ.get("CUSS_WORDS") or Path(__file__).resolve().parents[1] / "cuss_words.txt")
    det = detector_for()

    def stream(text: str) -> None:
        f = AnswerFilter(banned)
        for i in range(0, len(text), 256):
            f.feed(text[i : i + 256])
        f.finish()

    print(f"{'input':24} {'banned ms':>10} {'privacy ms':>11} {'stream ms':>10}")
    for name, text in INPUTS.items():
        b = _best(lambda t=text: banned.find(t))
        p = _best(lambda t=text: det.find(t))
        s = _best(lambda t=text: stream(t))
        print(f"{name:24} {b:10.1f} {p:11.1f} {s:10.1f}", flush=True)


if __name__ == "__main__":
    main()
