#!/usr/bin/env python3
"""
bench/accounts.py: what the account watch (chat_server.accounts) costs.

Every CHAT_ACCOUNT_CHECK_INTERVAL seconds (2) the server asks its store which
of the users logged in are disabled or gone (Store.inactive_users). This
measures, on SQLite (a file in a temp dir) and on a throwaway PostgreSQL
cluster on 127.0.0.1 (Debian's postgresql package, as the tests start it; skipped
without one):

tick        the time of one check for N distinct logged-in users (N = 100,
            1,000, 10,000; 10,000 users in the table), median and max of
            --rounds; and that time as a share of the 2 s interval.
store       what it does to the store's other work: save_turn latency (p50,
            p99) of a writer saving turns back to back, alone and while the
            watch checks 10,000 users continuously (not every 2 s: the worst
            case), as ratios. On SQLite the watch and the writer share the
            store's one connection and thread, batch by batch.

    .venv/bin/python bench/accounts.py             # about a minute here
    .venv/bin/python bench/accounts.py --engines sqlite --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chat_server.store import Store, TurnRecord, open_store  # noqa: E402

INTERVAL = 2.0
USERS = 10_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(store: Store, n: int) -> list[str]:
    names = [f"user{i:05d}" for i in range(n)]
    # Straight through the engine: n add_user calls would fsync n times.
    from chat_server.store.sql import SQLStore

    assert isinstance(store, SQLStore)
    now = store._to_db_time(datetime.now(UTC))
    async with store._transaction() as tx:
        for name in names:
            await tx.execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                (name, "h", now))
    for name in names[::1000]:  # a few disabled ones among them
        await store.set_disabled(name, True)
    return names


async def tick_times(store: Store, names: list[str], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (100, 1_000, 10_000):
        subset = names[:n]
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            inactive = await store.inactive_users(subset)
            times.append(time.perf_counter() - t0)
        assert inactive == set(subset[::1000])
        out[str(n)] = {"median_ms": round(statistics.median(times) * 1000, 2),
                       "max_ms": round(max(times) * 1000, 2),
                       "share_of_interval": round(statistics.median(times) / INTERVAL, 5)}
    return out


async def writer(store: Store, seconds: float) -> list[float]:
    latencies = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        await store.save_turn(TurnRecord("user00001", "bench", datetime.now(UTC), None, "m",
                                         f"q{i}", "a"))
        latencies.append(time.perf_counter() - t0)
        i += 1
    return latencies


async def store_impact(store: Store, names: list[str], seconds: float) -> dict[str, Any]:
    alone = await writer(store, seconds)
    stop = asyncio.Event()
    ticks = 0

    async def watch() -> None:
        nonlocal ticks
        while not stop.is_set():
            await store.inactive_users(names)
            ticks += 1

    task = asyncio.create_task(watch())
    try:
        beside = await writer(store, seconds)
    finally:
        stop.set()
        await task

    def summary(lat: list[float]) -> dict[str, float]:
        return {"turns": len(lat), "p50_ms": round(pct(lat, 0.5) * 1000, 2),
                "p99_ms": round(pct(lat, 0.99) * 1000, 2)}

    a, b = summary(alone), summary(beside)
    return {"alone": a, "with_continuous_checks": b, "checks_meanwhile": ticks,
            "p50_ratio": round(b["p50_ms"] / a["p50_ms"], 2),
            "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2)}


async def run_engine(target: str, rounds: int, seconds: float) -> dict[str, Any]:
    store = await open_store(target)
    try:
        names = await fill(store, USERS)
        return {"tick": await tick_times(store, names, rounds),
                "store": await store_impact(store, names, seconds)}
    finally:
        await store.close()


def pytest_outcome() -> type[BaseException]:
    """What the test fixtures raise for a missing engine (pytest's skip/fail)."""
    from _pytest.outcomes import OutcomeException

    return OutcomeException


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0, help="per writer phase")
    args = parser.parse_args()
    results: dict[str, Any] = {"users_in_table": USERS, "interval_s": INTERVAL}
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        for engine in args.engines.split(","):
            if engine == "sqlite":
                results["sqlite"] = asyncio.run(
                    run_engine(str(Path(tmp) / "chat.db"), args.rounds, args.seconds))
            elif engine == "postgresql":
                try:
                    from tests.fixtures.postgres import _start_cluster
                    cluster = _start_cluster()
                except (Exception, pytest_outcome()) as exc:  # no PostgreSQL: measure the rest
                    results["postgresql"] = {"skipped": (str(exc) or type(exc).__name__)
                                             .splitlines()[0]}
                    continue
                try:
                    url = cluster.create_database()
                    results["postgresql"] = asyncio.run(run_engine(url, args.rounds, args.seconds))
                finally:
                    cluster.destroy()
    text = json.dumps(results, indent=2)
    print(text)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "accounts.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
