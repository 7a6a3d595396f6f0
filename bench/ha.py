#!/usr/bin/env python3
"""
bench/ha.py: what running behind HAProxy with replicas costs.

Everything runs on 127.0.0.1 in processes this tool starts and stops: the
Ollama stand-in, a throwaway PostgreSQL cluster (Debian's binaries, as the
tests use), two chat-server replicas on it, and HAProxy from its image with the
host's network and the repository's deploy/haproxy/haproxy.cfg (the tests'
rendering: tests/ha/cluster.py). Loops are bounded in count and time.

first-byte   one client, S sequential messages per round: first answer byte
             p50/p99 (what HAProxy's extra hop costs, without queueing):
               direct   to replica A, connected directly
               haproxy  through HAProxy (PROXY v2) to A or B
               ceiling  the same work straight to the model API (the stand-in)
             rounds interleaved (direct, haproxy, ceiling, ...).
             Target: haproxy p50 within 1 ms of direct.
load         C clients log in and send M messages each, all at once, the same
             three ways, rounds interleaved: errors, first byte and whole
             answer p50/p99, messages/s. Target: no errors at C=200.
idle         KiB of RSS per idle logged-in session, first thing after the
             warm-up: N sessions straight to replica A (kept), then N through
             HAProxy (spread over A and B), RSS difference per session: A's
             direct vs B's through HAProxy. Target: unchanged.

    .venv/bin/python bench/ha.py         # S=100, C=200, M=5, 3 rounds, N=1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.run import (
    HOST,
    Sample,
    ServerProc,
    StandInProc,
    V2Client,
    drive_ceiling,
    message_text,
    pct,
    raise_fd_limit,
)

USER_PASSWORD = "bench password"
#: Direct clients come from here: not a trusted proxy, so no PROXY header is needed.
DIRECT_SOURCE = "127.0.0.2"


async def open_client(port: int, user: str, source: str | None) -> V2Client:
    from chatcore.protocol import Authenticate, AuthResult, ClientHello, ServerHello

    reader, writer = await asyncio.open_connection(
        HOST, port, local_addr=(source, 0) if source else None, limit=2**20)
    client = V2Client(reader, writer)
    client._send(ClientHello((2,), agent="bench/ha"))
    if not isinstance(await client.next_event(), ServerHello):
        raise RuntimeError("no HELLO")
    client._send(Authenticate(user, USER_PASSWORD))
    result = await client.next_event()
    if not (isinstance(result, AuthResult) and result.ok):
        raise RuntimeError(f"login failed: {result!r}")
    return client


async def drive(port: int, users: list[str], messages: int, source: str | None,
                tag: str) -> tuple[list[Sample], float]:
    sem = asyncio.Semaphore(50)

    async def login(user: str) -> V2Client:
        async with sem:
            return await open_client(port, user, source)

    clients = await asyncio.gather(*(login(u) for u in users))
    samples: list[Sample] = []

    async def run(idx: int, client: V2Client) -> None:
        for i in range(messages):
            samples.append(await client.chat(f"{tag} {message_text(idx, i)}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in clients))
    return samples, wall


def summary(samples: list[Sample], wall: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    firsts = [s.first * 1000 for s in ok if s.first is not None]
    totals = [s.total * 1000 for s in ok]
    return {"sent": len(samples), "errors": len(samples) - len(ok),
            "error_kinds": sorted({s.error for s in samples if not s.ok})[:5],
            "first_p50_ms": pct(firsts, 50), "first_p99_ms": pct(firsts, 99),
            "total_p50_ms": pct(totals, 50), "total_p99_ms": pct(totals, 99),
            "msgs_per_s": len(ok) / wall if wall else float("nan")}


def rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


async def idle_cost(ports: list[int], pids: list[int], via: int, n: int,
                    users: list[str]) -> dict[str, Any]:
    """KiB of RSS per idle logged-in session, on fresh replicas (before any
    load): n sessions straight to replica A, kept open, then n through HAProxy
    (which spreads them over A and B: it does not see the direct ones). B's
    figure is the one to compare with A's direct one (both first sessions of
    a process after the same warm-up); A's second is the marginal cost."""
    sem = asyncio.Semaphore(50)

    async def open_n(port: int, source: str | None, offset: int) -> list[V2Client]:
        async def one(i: int) -> V2Client:
            async with sem:
                return await open_client(port, users[(offset + i) % len(users)], source)
        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def settled_rss() -> list[int]:
        gc.collect()
        await asyncio.sleep(3)
        return [rss(p) for p in pids]

    base = await settled_rss()
    direct = await open_n(ports[0], DIRECT_SOURCE, 0)
    mid = await settled_rss()
    proxied = await open_n(via, None, n)
    end = await settled_rss()
    counts = await sessions_per_replica(pids, [], ports)
    for c in direct + proxied:
        await c.close()
    via_a, via_b = counts[0] - n, counts[1]
    return {
        "sessions": n,
        "direct_on_a": (mid[0] - base[0]) / 1024 / n,
        "haproxy_on_b": (end[1] - mid[1]) / 1024 / via_b if via_b else float("nan"),
        "haproxy_on_a_marginal": (end[0] - mid[0]) / 1024 / via_a if via_a else float("nan"),
        "haproxy_split": [via_a, via_b],
    }


async def sessions_per_replica(pids: list[int], clients: list[V2Client],
                               ports: list[int]) -> list[int]:
    import psutil

    counts = []
    for pid, port in zip(pids, ports, strict=True):
        conns = psutil.Process(pid).net_connections(kind="tcp")
        counts.append(sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr
                          and c.laddr.port == port))
    return counts


def start_postgres(root: Path) -> Any:
    from fixtures.postgres import PostgresServer, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries: run .ci/install-host-packages.sh")
    run_as = "postgres" if os.geteuid() == 0 else None
    return PostgresServer(bindir=bindir, root=root, run_as=run_as).init().start()


def start_haproxy(tmp: Path, replicas: list[tuple[int, int]]) -> tuple[str, int]:
    from ha.cluster import haproxy_image, haproxy_volumes, render_haproxy_cfg

    from bench.run import free_port

    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(port, replicas))
    cfg.chmod(0o644)
    name = f"chat-ha-bench-{uuid.uuid4().hex[:8]}"
    import subprocess

    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host",
                    *haproxy_volumes(cfg), haproxy_image()],
                   check=True, capture_output=True, timeout=120)
    return name, port


async def amain(a: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    from bench.run import free_port

    raise_fd_limit(4 * (a.clients + a.idle) + 1024)
    tmp = Path(tempfile.mkdtemp(prefix="chat-bench-ha-"))
    standin = StandInProc(tokens=a.tokens, delay_ms=a.delay_ms)
    # A directory of its own at the top of /tmp (the server may run as the
    # postgres user, which must reach it).
    pg = start_postgres(Path(tempfile.mkdtemp(prefix="chat-bench-pg-")))
    haproxy_name = None
    servers: list[ServerProc] = []
    try:
        db = pg.create_database()
        common = {
            "CHAT_DB": db, "CHAT_TRUSTED_PROXIES": "127.0.0.1/32", "CHAT_RATE_LIMIT": "0",
            "CHAT_MAX_PARALLEL": "1024", "CHAT_ARGON2_TIME_COST": "1",
            "CHAT_ARGON2_MEMORY_KIB": "1024", "CHAT_HEALTH_HOST": HOST,
            "CHAT_SESSION_TOKEN_TTL": "0",
        }
        health = [free_port(), free_port()]
        for i in range(2):
            servers.append(ServerProc(tmp / f"replica{i}", standin.url, CHAT_HEALTH_PORT=str(health[i]),
                                      **common))
        users = [f"bench{i}" for i in range(max(a.clients, 50))]
        # The one-client case: a fresh user (a fresh conversation) per round and way.
        seq_users = [f"seq{r}{case}" for r in range(a.rounds) for case in ("direct", "haproxy")]
        servers[0].add_users(dict.fromkeys(users + seq_users, USER_PASSWORD))
        for s in servers:
            s.start()
        haproxy_name, hport = start_haproxy(tmp, [(s.port, h) for s, h in zip(servers, health,
                                                                               strict=True)])
        await asyncio.sleep(4)  # HAProxy's checks: rise 2 at 1 s

        cases = ("direct", "haproxy", "ceiling")
        clients = users[: a.clients]
        # Warm-up (connections, caches), not counted: both replicas alike.
        for s in servers:
            await drive(s.port, clients[:20], 1, DIRECT_SOURCE, "warm")
        pids = [s.proc.pid for s in servers if s.proc is not None]
        ports = [s.port for s in servers]
        idle = await idle_cost(ports, pids, hport, a.idle, users)
        await drive(hport, clients[:20], 1, None, "warm")
        out: dict[str, Any] = {"sequential": a.sequential, "clients": a.clients,
                               "messages": a.messages, "rounds": a.rounds,
                               "tokens": a.tokens, "delay_ms": a.delay_ms}
        single: dict[str, list[Sample]] = {c: [] for c in cases}
        single_walls: dict[str, float] = dict.fromkeys(cases, 0.0)
        for r in range(a.rounds):
            for case in cases:
                if case == "ceiling":
                    samples, wall = await drive_ceiling(standin.url, 1, a.sequential, None)
                elif case == "direct":
                    samples, wall = await drive(servers[0].port, [f"seq{r}direct"],
                                                a.sequential, DIRECT_SOURCE, f"s{r}")
                else:
                    samples, wall = await drive(hport, [f"seq{r}haproxy"], a.sequential, None,
                                                f"s{r}")
                single[case] += samples
                single_walls[case] += wall
        out["first_byte"] = {case: summary(single[case], single_walls[case]) for case in cases}
        fb = out["first_byte"]
        out["first_byte"]["haproxy_minus_direct_p50_ms"] = (fb["haproxy"]["first_p50_ms"]
                                                            - fb["direct"]["first_p50_ms"])
        out["first_byte"]["direct_over_ceiling_p50"] = (fb["direct"]["first_p50_ms"]
                                                        / fb["ceiling"]["first_p50_ms"])
        out["first_byte"]["haproxy_over_ceiling_p50"] = (fb["haproxy"]["first_p50_ms"]
                                                         / fb["ceiling"]["first_p50_ms"])

        results: dict[str, list[Sample]] = {c: [] for c in cases}
        walls: dict[str, float] = dict.fromkeys(cases, 0.0)
        for r in range(a.rounds):
            for case in ("direct", "haproxy", "ceiling"):
                if case == "ceiling":
                    samples, wall = await drive_ceiling(standin.url, a.clients, a.messages, None)
                elif case == "direct":
                    samples, wall = await drive(servers[0].port, clients, a.messages,
                                                DIRECT_SOURCE, f"r{r}")
                else:
                    samples, wall = await drive(hport, clients, a.messages, None, f"r{r}")
                results[case] += samples
                walls[case] += wall
        load = out["load"] = {case: summary(samples, walls[case])
                              for case, samples in results.items()}
        for case in ("direct", "haproxy"):
            load[f"{case}_over_ceiling_msgs_per_s"] = (load[case]["msgs_per_s"]
                                                       / load["ceiling"]["msgs_per_s"])
        out["idle_kib_per_session"] = idle
        return out
    finally:
        if haproxy_name:
            subprocess.run(["docker", "rm", "-f", haproxy_name], capture_output=True, timeout=60)
        for s in servers:
            with contextlib.suppress(Exception):
                s.stop()
        standin.stop()
        with contextlib.suppress(Exception):
            pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sequential", type=int, default=100,
                   help="messages per round of the one-client first-byte case")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--delay-ms", type=float, default=5)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ha.json")
    a = p.parse_args()
    out = asyncio.run(amain(a))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
