#!/usr/bin/env python3
"""
bench/long_history.py: what does one user's very long conversation cost the
server on each message, and the other users meanwhile?

A live chat-server and stand-in on 127.0.0.1. The database is seeded with one
conversation of ``--turns`` complete turns of ``--chars`` characters of
question and as many of answer (default 5,000 x 2 x 8 KiB: 80 MiB, more than
the default 64 MiB conversation cache, as a user who has chatted in it for a
long time, or who fills it on purpose, would have). Then:

* the user sends ``--messages`` CHATs in that conversation, one after the
  other, and as many in a new conversation: the round trip CHAT -> END of each
  (the model answers 20 tokens at once);
* the **ceiling**: the same requests (the trimmed context the server sends)
  straight to the stand-in's chat API, in the same run;
* another user's session PINGs back to back from a process of its own
  (``bench.holdback.ping_loop``) while the long conversation is used: p99/max;
* the server's CPU time per message and its RSS at the end.

``--server-path DIR`` runs the server of another checkout as well (before /
after), on a copy of the same database. Results go to ``--json`` (default
bench/results/long_history.json) and a Markdown table on stdout. Run it under
``flock /work/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench.holdback import STALL_PASSWORD, STALL_USER, pct, ping_loop, table  # noqa: E402

USER, PASSWORD = "longtalker", "a long talker's passphrase"
CONVERSATION = "the-long-one"


def _seed(db: Path, turns: int, chars: int) -> None:
    """The conversation, written straight into the server's schema in one
    transaction (the store's save_turn commits each turn: minutes of fsyncs)."""
    con = sqlite3.connect(db)
    try:
        now = time.time()
        with con:
            con.executemany(
                "INSERT INTO turns (username, conversation, created_at, completed_at, model, "
                "user_text, answer_text, prompt_tokens, answer_tokens, status) "
                "VALUES (?, ?, ?, ?, 'llama3.2', ?, ?, 100, 100, 'complete')",
                ((USER, CONVERSATION, now + n, now + n, f"question {n} " + "q" * chars,
                  f"answer {n} " + "a" * chars) for n in range(turns)))
    finally:
        con.close()


def _round_trips(port: int, conversation: str, n: int) -> list[float]:
    from tests.server.clients import logged_in

    client = logged_in(port, USER, PASSWORD)
    out = []
    try:
        for k in range(n):
            t0 = time.perf_counter()
            reply = client.chat(f"message {k}", conversation)
            assert reply.end is not None, reply.events
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        client.close()
    return out


def _ceiling(url: str, messages: list[dict[str, str]], n: int) -> list[float]:
    import ollama

    client = ollama.Client(host=url)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _chunk in client.chat(model="llama3.2", messages=messages, stream=True):
            pass
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _context_tokens() -> int:
    from chat_server.config import Settings

    return int(Settings.context_tokens)


def run_all(turns: int, chars: int, messages: int,
            server_path: Path | None) -> list[dict[str, Any]]:
    import multiprocessing

    import psutil
    from chat_server.context import trim_history

    from bench.run import ServerProc, StandInProc

    mp = multiprocessing.get_context("spawn")
    standin = StandInProc(tokens=20, delay_ms=0)
    seeded = Path(tempfile.mkdtemp(prefix="long-history-")) / "seed"
    servers: dict[str, ServerProc] = {}
    rows: list[dict[str, Any]] = []
    try:
        for label, path in [("this tree", None), *([("before", server_path)] if server_path else [])]:
            tmp = Path(tempfile.mkdtemp(prefix="long-history-"))
            server = ServerProc(tmp, standin.url, server_path=path, CHAT_RATE_LIMIT="0",
                                CHAT_ARGON2_TIME_COST="1", CHAT_ARGON2_MEMORY_KIB="8")
            server.add_users({USER: PASSWORD, STALL_USER: STALL_PASSWORD})
            if not seeded.exists():
                _seed(tmp / "chat.db", turns, chars)
                seeded.mkdir(parents=True)
                shutil.copy(tmp / "chat.db", seeded / "chat.db")
            else:
                shutil.copy(seeded / "chat.db", tmp / "chat.db")
            servers[label] = server
        # What the server sends the model for the next message of the long
        # conversation: the ceiling's request.
        history = []
        for n in range(turns):
            history += [{"role": "user", "content": f"question {n} " + "q" * chars},
                        {"role": "assistant", "content": f"answer {n} " + "a" * chars}]
        context, _ = trim_history([*history, {"role": "user", "content": "message 0"}],
                                  _context_tokens())
        del history
        ceiling = _ceiling(standin.url, context, messages)
        for who, server in servers.items():
            server.start()
            assert server.proc is not None
            proc = psutil.Process(server.proc.pid)
            stop, ready, out = mp.Event(), mp.Event(), mp.Queue()
            pinger = mp.Process(target=ping_loop, args=(server.port, stop, ready, out), daemon=True)
            pinger.start()
            ready.wait(60)
            time.sleep(0.3)
            cpu0 = sum(proc.cpu_times()[:2])
            long_rtts = _round_trips(server.port, CONVERSATION, messages)
            cpu_long = sum(proc.cpu_times()[:2]) - cpu0
            stop.set()
            pings = out.get(timeout=120)
            pinger.join(60)
            rss = proc.memory_info().rss / 2**20
            cpu0 = sum(proc.cpu_times()[:2])
            fresh_rtts = _round_trips(server.port, f"fresh-{who}", messages)
            cpu_fresh = sum(proc.cpu_times()[:2]) - cpu0
            rows.append({
                "server": who,
                "long_ms_median": round(statistics.median(long_rtts), 1),
                "long_ms_max": round(max(long_rtts), 1),
                "fresh_ms_median": round(statistics.median(fresh_rtts), 1),
                "ceiling_ms_median": round(statistics.median(ceiling), 1),
                "long_vs_ceiling": round(statistics.median(long_rtts) / statistics.median(ceiling), 2),
                "cpu_ms_per_long_msg": round(cpu_long / messages * 1000, 1),
                "cpu_ms_per_fresh_msg": round(cpu_fresh / messages * 1000, 1),
                "other_ping_p99_ms": round(pct(pings, 99), 2),
                "other_ping_max_ms": round(max(pings), 2),
                "rss_mib": round(rss, 1),
            })
            print(rows[-1], flush=True)
            server.stop()
    finally:
        for server in servers.values():
            server.stop()
        standin.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--turns", type=int, default=5000)
    ap.add_argument("--chars", type=int, default=8192)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--server-path", type=Path, help="another checkout to compare against")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "long_history.json")
    args = ap.parse_args(argv)
    rows = run_all(args.turns, args.chars, args.messages, args.server_path)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
