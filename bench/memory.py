"""
bench/memory.py: does memory come back after sessions close?

Issue: the conversation cache kept conversations of closed sessions (200 closed
sessions with one 60 KB message each left 12 MB behind). This runs a real
chat-server (subprocess, SQLite in a temp dir) against the Ollama API stand-in,
all on 127.0.0.1, and measures the server's RSS:

1. warm-up: ``--warmup`` sessions (connect, log in, send one message of
   ``--message-kb`` KB, read the answer, close), so allocator pools and caches
   reach their working size;
2. baseline: RSS after a short pause;
3. ``--sessions`` more sessions the same way, ``--concurrency`` at a time;
4. after: RSS after the same pause. The figure is after - baseline.

``--live-turns N`` measures the other half of the question, the conversations of
sessions that stay open: ``--concurrency`` sessions log in after the baseline
and stay connected while they send N messages of ``--message-kb`` KB in total,
``--turns-per-conversation`` to a conversation (then the next one), with
``CHAT_HISTORY_CACHE_MB`` = ``--cache-mb``. RSS is read every
``--sample-every`` messages: once the live conversations pass the budget it
must stop growing (least recently used conversations leave the cache; the
store has them).

``--server-path DIR`` runs the server (and its CLI) of another checkout DIR
(e.g. the code before the fix) with the same driver. Results as JSON on stdout and in bench/results/memory.json.

    .venv/bin/python bench/memory.py                 # 1,000 sessions x 60 KB
    git worktree add /tmp/old COMMIT
    .venv/bin/python bench/memory.py --sessions 200 --server-path /tmp/old
    .venv/bin/python bench/memory.py --live-turns 600 --cache-mb 16   # live sessions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import ServerProc, StandInProc, V2Client  # noqa: E402

#: Plain words: no banned word, e-mail address or phone number to refuse.
WORDS = "the quick brown fox jumps over a lazy dog while curious cats watch quietly "


def message(kb: int, n: int) -> str:
    """``kb`` KB of text; the stand-in answers it with 20 tokens (it would echo
    it whole otherwise, and the filter's per-token work would be the benchmark)."""
    head = f"[standin:tokens=20] session {n}: "
    text = head + WORDS * (kb * 1024 // len(WORDS) + 1)
    return text[: kb * 1024]


async def one_session(port: int, user: str, password: str, text: str) -> bool:
    client = await V2Client.open(port, user, password)
    try:
        sample = await client.chat(text)
        return bool(sample.ok)
    finally:
        await client.close()


async def run_sessions(port: int, users: list[tuple[str, str]], start: int, count: int,
                       kb: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def session(n: int) -> None:
        nonlocal failures
        user, password = users[n % len(users)]
        async with gate:
            if not await one_session(port, user, password, message(kb, n)):
                failures += 1

    await asyncio.gather(*(session(n) for n in range(start, start + count)))
    return failures


async def run_live(port: int, users: list[tuple[str, str]], turns: int, kb: int,
                   sessions: int, per_conversation: int, sample_every: int,
                   rss: Any) -> tuple[int, list[tuple[int, float]]]:
    """``sessions`` connections that stay open send ``turns`` messages in all,
    ``per_conversation`` to a conversation; RSS (MiB) after every ``sample_every``."""
    clients = [await V2Client.open(port, *users[i % len(users)]) for i in range(sessions)]
    failures = 0
    samples: list[tuple[int, float]] = []
    sent = 0
    try:
        while sent < turns:
            batch = min(sample_every, turns - sent)

            async def drive(c: int, first: int, count: int) -> None:
                nonlocal failures
                client = clients[c]
                for n in range(first, first + count):
                    conversation = f"live-{c}-{n // per_conversation}"
                    if not (await client.chat(message(kb, n), conversation=conversation)).ok:
                        failures += 1

            share = [batch // sessions + (1 if c < batch % sessions else 0)
                     for c in range(sessions)]
            firsts = [sent + sum(share[:c]) for c in range(sessions)]
            await asyncio.gather(*(drive(c, firsts[c], share[c]) for c in range(sessions)))
            sent += batch
            samples.append((sent, rss() / 2**20))
            print(f"  {sent} live messages: RSS {samples[-1][1]:.1f} MiB", flush=True)
    finally:
        for client in clients:
            await client.close()
    return failures, samples


def settle_rss(server: ServerProc, pause: float) -> int:
    """Median of five RSS samples after ``pause`` seconds of quiet."""
    time.sleep(pause)
    samples = []
    for _ in range(5):
        samples.append(server.rss())
        time.sleep(0.2)
    return int(statistics.median(samples))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--message-kb", type=int, default=60)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--pause", type=float, default=2.0, help="quiet seconds before each RSS reading")
    p.add_argument("--server-path", type=Path, help="run the server of this checkout")
    p.add_argument("--live-turns", type=int, default=0,
                   help="instead of closed sessions: this many messages from --concurrency "
                        "sessions that stay open")
    p.add_argument("--turns-per-conversation", type=int, default=10)
    p.add_argument("--cache-mb", type=int, default=None,
                   help="CHAT_HISTORY_CACHE_MB for the server (default: its own default)")
    p.add_argument("--sample-every", type=int, default=100,
                   help="--live-turns: read RSS after every this many messages")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    users = [(f"user{i}", f"password-of-user{i}") for i in range(a.users)]
    standin = StandInProc(tokens=20, delay_ms=0)
    result: dict[str, Any] = {"sessions": a.sessions, "message_kb": a.message_kb,
                              "warmup": a.warmup, "concurrency": a.concurrency}
    with tempfile.TemporaryDirectory(prefix="chat-bench-memory-") as tmp:
        overrides = {
            "CHAT_RATE_LIMIT": "0", "CHAT_MAX_PARALLEL": "8",
            # Logins are not what is measured here.
            "CHAT_ARGON2_TIME_COST": "1", "CHAT_ARGON2_MEMORY_KIB": "1024",
        }
        if a.cache_mb is not None:
            overrides["CHAT_HISTORY_CACHE_MB"] = str(a.cache_mb)
            result["cache_mb"] = a.cache_mb
        # --server-path: that checkout's server, and its own CLI for its own schema.
        server = ServerProc(Path(tmp) / "server", standin.url, server_path=a.server_path,
                            **overrides)
        try:
            server.add_users(dict(users))
            server.start()
            result["rss_start_mib"] = server.rss() / 2**20
            failed = asyncio.run(run_sessions(server.port, users, 0, a.warmup, a.message_kb,
                                              a.concurrency))
            baseline = settle_rss(server, a.pause)
            t0 = time.monotonic()
            if a.live_turns:
                live_failed, curve = asyncio.run(run_live(
                    server.port, users, a.live_turns, a.message_kb, a.concurrency,
                    a.turns_per_conversation, a.sample_every, server.rss))
                failed += live_failed
                result.update({
                    "live_turns": a.live_turns, "sessions": a.concurrency,
                    "turns_per_conversation": a.turns_per_conversation,
                    "rss_curve_mib": [[n, round(m, 1)] for n, m in curve],
                    "rss_peak_mib": round(max(m for _, m in curve), 1),
                    "live_text_mib": round(a.live_turns * a.message_kb * 1024 / 2**20, 1),
                })
            else:
                failed += asyncio.run(run_sessions(server.port, users, a.warmup, a.sessions,
                                                   a.message_kb, a.concurrency))
            result["seconds"] = round(time.monotonic() - t0, 1)
            after = settle_rss(server, a.pause)
            count = a.live_turns or a.sessions
            result.update({
                "failed_sessions": failed,
                "rss_baseline_mib": round(baseline / 2**20, 1),
                "rss_after_mib": round(after / 2**20, 1),
                "rss_growth_mib": round((after - baseline) / 2**20, 1),
                ("growth_per_message_kib" if a.live_turns else "growth_per_session_kib"):
                    round((after - baseline) / 1024 / count, 1),
                "tracebacks": server.tracebacks(),
            })
            if a.live_turns:
                result["rss_peak_growth_mib"] = round(
                    result["rss_peak_mib"] - baseline / 2**20, 1)
        finally:
            server.stop()
            standin.stop()
    print(json.dumps(result, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("failed_sessions") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
