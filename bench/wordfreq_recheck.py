"""Which of the most frequent words of ten languages the banned-word matcher
refuses (docs/SECURITY.md §4): the re-check every new leet reading must pass
without refusing more words than before.

    .venv/bin/python -m bench.wordfreq_recheck [--top 400000] [--out refused.txt]

Prints, per language, how many of its ``--top`` most frequent words (wordfreq)
are refused, not counting a word that is literally a listed entry or an
emphatic stretch (``fuuuck``), and the refused words themselves. Also checks
the title-case and upper-case forms of the first 5,000 words."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

LANGS = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "uk", "el")


def main(argv: list[str] | None = None) -> int:
    import wordfreq
    from chat_server.moderation import BannedWords
    from chat_server.moderation.banned_words import _literal

    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=400_000)
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    banned = BannedWords.from_file(Path(__file__).resolve().parents[1] / "cuss_words.txt")
    entries = {_literal(e) for e in banned.entries}

    def refused(w: str) -> bool:
        for s, e in banned.find(w):
            lit = _literal(w[s:e])
            if lit not in entries and not any(c * 3 in lit for c in set(lit)):
                return True
        return False

    total = 0
    lines = []
    t0 = time.perf_counter()
    for lang in args.langs.split(","):
        words = wordfreq.top_n_list(lang, args.top)
        bad = sorted({w for w in words if refused(w)}
                     | {w for w in words[:5000] for v in (w.title(), w.upper()) if refused(v)})
        total += len(bad)
        print(f"{lang}: {len(words)} words, {len(bad)} refused", flush=True)
        lines.extend(f"{lang}\t{w}" for w in bad)
    print(f"total refused: {total} ({time.perf_counter() - t0:.0f} s)")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
