#!/usr/bin/env python3
"""
bench/holdback.py: what the answer filter holds back, what it costs, and
whether one huge answer or message stalls the other sessions.

Cases (``--cases``, default all):

held     Streams answers token by token (one word per token, as the stand-in
         sends, and 1-3 characters per token) through the answer filter and
         reports the most text it ever held back, in characters and in words,
         against the longest candidate the detectors accept (the target:
         the candidate in progress plus one word). Corpora: prose, the stall
         report's ``w0 w1 … w199``, rows of years, prices, scores, version
         numbers, code, and text full of phone numbers and e-mail addresses.
filter   Microseconds per ``feed()`` for a typical answer (20-token answers of
         the benchmark's shape and a long mixed answer). ``--compare REV`` also
         loads the filter of git revision REV (with the detectors of that
         revision) and reports the ratio, in the same run.
phones   The share of numbers that are not phone numbers which the detector
         reads as one (default regions): random digit strings of 7-13 digits
         (with and without a leading 0: what a bare number costs), hex tokens,
         UUIDs, dates and times, IPv4 addresses, decimals, order numbers;
         ``--compare REV`` adds that revision's figures.
stall    A live chat-server and stand-in on 127.0.0.1: a second session pings
         back to back (from a process of its own, so the bench's own client
         decoding the attack does not delay it) while one session (a) receives
         a 1 MB answer without any place to cut (``--huge-mb`` to change it),
         one of banned hits that overlap without end (``s h i t s h i t …``),
         one of single digits (``1 1 1 …``) and one of random 3-digit groups
         (the phone detector's most costly text), (b) sends a 64 KiB message
         of ``+1 234 `` repeated, and one of random 3-digit groups. Reports the
         other session's PING round trip p50/p99/max next to the same figures
         with no attack (the baseline). ``--server-path DIR`` runs the server
         of another checkout as well (before/after in the same run: each case
         on both servers, one after the other).

Results go to ``--json`` (default bench/results/holdback.json) and a Markdown
table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from chat_server.moderation import AnswerFilter, BannedWords  # noqa: E402
from chatcore.privacy import MAX_PHONE_DIGITS  # noqa: E402

BANNED = BannedWords.from_file(REPO / "cuss_words.txt")
WORDS = re.compile(r"\s*\S+|\s+$")


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


# --------------------------------------------------------------------------- corpora
def corpora() -> dict[str, str]:
    prose = (
        "The quick brown fox jumps over the lazy dog. In 2019 we measured 42 samples, "
        "and version 3.2 fixed 7 bugs; see section 4.1 for details. Prices rose from "
        "$19.99 to $24.50 (about 22.6%) between Q1 and Q3. "
    ) * 20
    return {
        "prose": prose,
        "w0…w199": " ".join(f"w{i}" for i in range(200)),
        "years": " ".join(str(y) for y in range(1900, 2100)),
        "prices": " ".join(f"${p}.99" for p in range(100, 300)),
        "scores": " ".join(f"{a}-{b}" for a in range(10) for b in range(10)),
        "versions": " ".join(f"v{a}.{b}.{c}" for a in range(4) for b in range(10) for c in range(5)),
        "code": "for i in range(10):\n    total += values[i] * 2 + 1\n    print(i, total)\n" * 30,
        "phones+emails": " ".join(
            f"call {98765 + i} {43210 + i} or write to user{i}@example.com today" for i in range(60)
        ),
    }


def tokenizations(text: str) -> dict[str, list[str]]:
    small = []
    i = 0
    k = 0
    while i < len(text):
        n = 1 + k % 3
        small.append(text[i : i + n])
        i += n
        k += 1
    return {"word": WORDS.findall(text), "1-3 chars": small}


def case_held() -> list[dict[str, Any]]:
    rows = []
    for name, text in corpora().items():
        longest_word = max(len(w) for w in text.split())
        for how, parts in tokenizations(text).items():
            filt = AnswerFilter(BANNED)
            most = most_words = 0
            first_out = None
            for n, part in enumerate(parts, 1):
                if filt.feed(part) and first_out is None:
                    first_out = n
                most = max(most, filt.pending)
                held = filt._buf
                most_words = max(most_words, len(held.split()))
            filt.finish()
            rows.append({
                "corpus": name, "tokens": how, "chars": len(text), "max_held_chars": most,
                "max_held_words": most_words, "longest_word": longest_word,
                "first_output_after_tokens": first_out,
            })
    return rows


# --------------------------------------------------------------------------- filter cost
@functools.cache
def load_revision(rev: str) -> types.SimpleNamespace:
    """The moderation modules of git revision ``rev`` (``privacy``,
    ``answer_filter``, ``make_filter()``), loaded as separate modules, so both
    versions run in one process."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"],
                              check=True, capture_output=True, text=True).stdout

    pkg = f"old_{abs(hash(rev))}"
    root = types.ModuleType(pkg)
    root.__path__ = []  # type: ignore[attr-defined]
    sys.modules[pkg] = root

    def load(name: str, source: str) -> types.ModuleType:
        source = source.replace("from chatcore.privacy import", f"from {pkg}.privacy import")
        spec = importlib.util.spec_from_loader(f"{pkg}.{name}", loader=None)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = pkg
        sys.modules[f"{pkg}.{name}"] = mod
        exec(compile(source, f"{rev}:{name}", "exec"), mod.__dict__)
        return mod

    base = "services/server/chat_server/moderation/"
    load("privacy", show("services/shared/chatcore/privacy.py"))
    with contextlib.suppress(subprocess.CalledProcessError):  # older revisions have none
        load("lexicon", show(base + "lexicon.py"))
    load("normalize", show(base + "normalize.py"))
    banned = load("banned_words", show(base + "banned_words.py"))
    filt = load("answer_filter", show(base + "answer_filter.py"))
    words = banned.BannedWords.from_file(REPO / "cuss_words.txt")
    return types.SimpleNamespace(privacy=sys.modules[f"{pkg}.privacy"], answer_filter=filt,
                                 make_filter=lambda: filt.AnswerFilter(words))


def time_feeds(make: Callable[[], Any], answers: list[list[str]], rounds: int) -> float:
    """Microseconds per feed (best of ``rounds``)."""
    best = float("inf")
    feeds = sum(len(a) for a in answers)
    for _ in range(rounds):
        t0 = time.perf_counter()
        for parts in answers:
            f = make()
            for p in parts:
                f.feed(p)
            f.finish()
        best = min(best, time.perf_counter() - t0)
    return best / feeds * 1e6


def case_filter(compare: str | None, rounds: int) -> list[dict[str, Any]]:
    from ollama_standin.answers import FILLER

    # bench/run.py's answers: the stand-in's filler words, 20 tokens each.
    bench_answers = [[" " + FILLER[(i + j) % len(FILLER)] for j in range(20)] for i in range(200)]
    numbered = [[f" item{i}-{j}" for j in range(20)] for i in range(200)]
    mixed = corpora()["prose"] + corpora()["phones+emails"]
    loads = {
        "20-token answers (stand-in filler)": bench_answers,
        "20-token answers (words with digits)": numbered,
        "long mixed answer (word tokens)": [WORDS.findall(mixed)],
    }
    makers: dict[str, Callable[[], Any]] = {"this tree": lambda: AnswerFilter(BANNED)}
    if compare:
        makers[compare] = load_revision(compare).make_filter
    rows = []
    for load_name, answers in loads.items():
        row: dict[str, Any] = {"load": load_name, "feeds": sum(len(a) for a in answers)}
        for who, make in makers.items():
            row[f"us_per_feed[{who}]"] = round(time_feeds(make, answers, rounds), 2)
        if compare:
            row["ratio"] = round(row["us_per_feed[this tree]"] / row[f"us_per_feed[{compare}]"], 3)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- phone false positives
def phone_samples(seed: int = 7, per: int = 2000) -> dict[str, list[str]]:
    """Numbers that are not phone numbers, or that nobody could tell from one."""
    import datetime
    import hashlib
    import ipaddress
    import random
    import uuid

    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for n in range(7, 14):
        out[f"{n} random digits"] = ["".join(rng.choice("0123456789") for _ in range(n)) for _ in range(per)]
        out[f"0 + {n - 1} random digits"] = [
            "0" + "".join(rng.choice("0123456789") for _ in range(n - 1)) for _ in range(per)]
    out["hex tokens (git SHAs, 7-16)"] = [
        hashlib.sha256(str(i).encode()).hexdigest()[: rng.randint(7, 16)] for i in range(per)]
    out["UUIDs"] = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(per)]
    day = datetime.datetime(1950, 1, 1)
    stamps = [day + datetime.timedelta(seconds=rng.randrange(150 * 365 * 86400)) for _ in range(per)]
    out["date + time (4 formats)"] = [
        t.strftime(rng.choice(["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%Y%m%d %H%M", "%d.%m.%Y"]))
        for t in stamps]
    out["IPv4 (with port or prefix)"] = [
        str(ipaddress.IPv4Address(rng.getrandbits(32))) + rng.choice(["", f":{rng.randrange(1, 65536)}",
                                                                     f"/{rng.randrange(33)}"])
        for _ in range(per)]
    out["decimals (10 places)"] = [f"{rng.uniform(-100, 100):.10f}" for _ in range(per)]
    out["order numbers (INV-…, #…)"] = [
        rng.choice(["INV-", "ORD", "#", "order #"]) + str(rng.randrange(10**9, 10**10)) for _ in range(per)]
    return out


def case_phones(compare: str | None) -> list[dict[str, Any]]:
    from chatcore import privacy

    finders: dict[str, Callable[[str], list[Any]]] = {"this tree": privacy.find_personal_data}
    if compare:
        finders[compare] = load_revision(compare).privacy.find_personal_data
    rows = []
    for name, samples in phone_samples().items():
        row: dict[str, Any] = {"numbers": name, "samples": len(samples)}
        for who, find in finders.items():
            flagged = sum(any(p.kind == "phone" for p in find(f"see {s} here")) for s in samples)
            row[f"phone[{who}] %"] = round(100 * flagged / len(samples), 1)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- stalls
STALL_USER, STALL_PASSWORD = "bench", "bench-password-1"


def ping_loop(port: int, stop: Any, ready: Any, out: Any) -> None:
    """A second session in a process of its own: PING back to back (5 ms
    apart) until ``stop`` is set; the round trips (ms) go to ``out``."""
    import gc

    from chatcore.protocol import Ping, Pong

    from tests.server.clients import logged_in

    client = logged_in(port, STALL_USER, STALL_PASSWORD)
    gc.collect()
    gc.disable()  # this process's collections are not the server's stalls
    rtts: list[float] = []
    ready.set()
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.perf_counter()
        client.send(Ping(str(n)))
        while True:
            ev = client.next_event(timeout=60)
            if isinstance(ev, Pong) and ev.nonce == str(n):
                break
        rtts.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
    client.close()
    out.put(rtts)


def _rss_mib(server: Any) -> tuple[float, float]:
    """RSS of the server's process and of its child processes (the moderation
    worker), MiB, after a case."""
    import psutil

    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    children = proc.children(recursive=True)
    return (round(proc.memory_info().rss / 2**20, 1),
            round(sum(c.memory_info().rss for c in children) / 2**20, 1))


def case_stall(huge_mb: float, server_path: Path | None = None) -> list[dict[str, Any]]:
    import multiprocessing
    import random

    from chatcore.protocol import AnswerEnd
    from ollama_standin import say

    from bench.run import ServerProc, StandInProc
    from tests.server.clients import V2Client

    mp = multiprocessing.get_context("spawn")
    standin = StandInProc(tokens=20, delay_ms=0)
    servers: dict[str, ServerProc] = {}
    for label, path in [("this tree", None), *([("before", server_path)] if server_path else [])]:
        tmp = Path(tempfile.mkdtemp(prefix="holdback-"))
        servers[label] = ServerProc(tmp, standin.url, server_path=path, CHAT_RATE_LIMIT="0",
                                    CHAT_MAX_FRAME_BYTES=str(16 * 2**20),
                                    CHAT_ARGON2_TIME_COST="1", CHAT_ARGON2_MEMORY_KIB="8")
    rows = []
    try:
        for server in servers.values():
            server.add_users({STALL_USER: STALL_PASSWORD})
            server.start()

        def measure(who: str, name: str, attack: Callable[[int], Any] | None,
                    seconds: float = 3.0) -> None:
            port = servers[who].port
            stop, ready, out = mp.Event(), mp.Event(), mp.Queue()
            proc = mp.Process(target=ping_loop, args=(port, stop, ready, out), daemon=True)
            proc.start()
            ready.wait(60)
            time.sleep(0.3)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            detail = ""
            if attack is None:
                time.sleep(seconds)
            else:
                detail = str(attack(port))
            took = time.perf_counter() - t0
            time.sleep(0.2)
            stop.set()
            rtts = out.get(timeout=120)
            proc.join(60)
            rss = _rss_mib(servers[who])
            rows.append({"server": who, "case": name, "attack_s": round(took, 2), "pings": len(rtts),
                         "rtt_p50_ms": round(pct(rtts, 50), 2), "rtt_p99_ms": round(pct(rtts, 99), 2),
                         "rtt_max_ms": round(max(rtts), 2), "server_rss_mib": rss[0],
                         "worker_rss_mib": rss[1],
                         "load_1m": f"{load:.1f} -> {os.getloadavg()[0]:.1f}", "detail": detail})
            print(rows[-1], flush=True)

        attacks = iter(range(10_000))

        def chat(text: str) -> Callable[[int], str]:
            def run(port: int) -> str:
                c = V2Client(port, timeout=600)
                c.login(STALL_USER, STALL_PASSWORD)
                # A fresh conversation each: no attack carries the others' history.
                reply = c.chat(text, conversation=f"attack-{next(attacks)}")
                c.close()
                end = reply.end
                return f"{len(reply.text)} chars answered" if isinstance(end, AnswerEnd) else repr(reply.events[-1])
            return run

        rng = random.Random(5)
        n = int(huge_mb * 1_000_000)
        cases: list[tuple[str, Callable[[int], Any] | None]] = [
            ("baseline (no attack)", None),
            (f"{huge_mb:g} MB answer, no place to cut", chat(say("9" * n))),
            (f"{huge_mb:g} MB answer of overlapping banned hits", chat(say("s h i t " * (n // 8)))),
            (f"{huge_mb:g} MB answer of single digits", chat(say("1 " * (n // 2)))),
            (f"{huge_mb:g} MB answer of random 3-digit groups",
             chat(say(" ".join(str(rng.randrange(100, 1000)) for _ in range(n // 4))))),
            ("64 KiB message of '+1 234 '", chat("+1 234 " * 9362)),
            ("64 KiB message of random 3-digit groups",
             chat(" ".join(str(rng.randrange(100, 1000)) for _ in range(16_383)))),
        ]
        for name, attack in cases:
            for who in servers:  # before and after, one right after the other
                measure(who, name, attack)
    finally:
        for server in servers.values():
            server.stop()
        standin.stop()
    return rows


# --------------------------------------------------------------------------- output
def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--cases", default="held,filter,phones,stall")
    ap.add_argument("--compare", metavar="REV", help="also time the filter of this git revision")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--huge-mb", type=float, default=1.0)
    ap.add_argument("--server-path", type=Path, metavar="DIR",
                    help="stall: also run the server of this checkout (before/after)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "holdback.json")
    args = ap.parse_args(argv)
    cases = set(args.cases.split(","))
    results: dict[str, Any] = {"max_phone_digits": MAX_PHONE_DIGITS}
    if "held" in cases:
        results["held"] = case_held()
        print("## held back\n\n" + table(results["held"]) + "\n")
    if "filter" in cases:
        results["filter"] = case_filter(args.compare, args.rounds)
        print("## filter cost\n\n" + table(results["filter"]) + "\n")
    if "phones" in cases:
        results["phones"] = case_phones(args.compare)
        print("## numbers read as phone numbers (default regions)\n\n" + table(results["phones"]) + "\n")
    if "stall" in cases:
        results["stall"] = case_stall(args.huge_mb, args.server_path)
        print("## other sessions' PING while one is attacked\n\n" + table(results["stall"]) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    if "held" in cases:
        med = statistics.median(r["max_held_chars"] for r in results["held"])
        print(f"median of the most held back per corpus: {med} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
