#!/usr/bin/env python3
"""
bench/login_flood.py: does a flood of wrong passwords take the server from
the users who are logged in, or keep the owners of accounts out?

A live chat-server (the production Argon2 parameters, the default per-address
limits) and stand-in on 127.0.0.1. Attacker processes (``--attackers``, at the
lowest CPU priority) log in with wrong passwords, over and over, from
``--addresses`` client addresses (127.0.0.0/8 is all loopback on Linux: each
is another client to the server), ``--per-address`` connections at a time
from each, for ``--seconds``; the names are a mix of real accounts and
unknown ones. Meanwhile:

* another user's logged-in session PINGs back to back from a process of its
  own (``bench.holdback.ping_loop``): round trip p50/p99/max;
* the owner of an account logs in with the right password once a second from
  an address it logged in from before (``owner, known address``) and from
  one it never used (``owner, new address``): how long each login takes, and
  how many did not get in within the login deadline;
* the server's CPU time.

``baseline`` is the same without the flood. ``--server-path DIR`` runs the
server of another checkout as well (before/after). The ceiling of a login is
one Argon2 verification with the same parameters in this process, timed in
the same run. Results go to ``--json`` (default bench/results/login_flood.json)
and a Markdown table on stdout. Run it under ``flock /work/bench.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench.holdback import STALL_PASSWORD, STALL_USER, pct, ping_loop, table  # noqa: E402
from tests.hostile._support import parse_v2  # noqa: E402

OWNER, OWNER_PASSWORD = "owner", "the owner's own passphrase"
#: Real accounts the attackers also guess at (besides unknown names).
VICTIMS = [f"user{n}" for n in range(20)]
KNOWN_ADDRESS = "127.0.0.1"
NEW_ADDRESS = "127.0.0.3"
HELLO = b'{"versions":[2],"agent":"flood/1"}'


def _frame(kind: str, body: bytes) -> bytes:
    return f"{kind} {len(body)}".encode().ljust(64) + body


def _attempt(port: int, source: str, user: str, password: str, timeout: float) -> str:
    """One v2 login from ``source``: 'ok', 'refused', 'throttled', 'timeout' or 'closed'."""
    try:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
    except OSError:
        return "closed"
    try:
        auth = json.dumps({"user": user, "password": password}).encode()
        sock.sendall(_frame("HELLO", HELLO) + _frame("AUTH", auth))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return "closed"
            data += chunk
            for kind, body in parse_v2(data):
                if kind == "AUTH_RESULT":
                    return "ok" if body.get("ok") else "refused"
                if kind == "ERROR":
                    code = body.get("code")
                    return {"auth_throttled": "throttled", "auth_timeout": "timeout"}.get(
                        code, "closed")
    except TimeoutError:
        return "timeout"
    except OSError:
        return "closed"
    finally:
        sock.close()


def _attacker(port: int, seconds: float, sources: list[str], per_address: int, out: Any) -> None:
    os.nice(int(os.environ.get("FLOODS_NICE", "19")))
    counts: dict[str, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(source: str) -> None:
        while time.monotonic() < stop:
            name = secrets.choice(VICTIMS) if secrets.randbelow(2) else f"nobody{secrets.randbelow(10**6)}"
            result = _attempt(port, source, name, secrets.token_hex(8), 15)
            with lock:
                counts[result] = counts.get(result, 0) + 1
            if result == "closed":
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(s,), daemon=True)
               for s in sources for _ in range(per_address)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    out.put(counts)


def _owner_logins(port: int, source: str, seconds: float, results: list[tuple[str, float]]) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        outcome = _attempt(port, source, OWNER, OWNER_PASSWORD, 30)
        results.append((outcome, (time.perf_counter() - t0) * 1000))
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))


def _enumeration(port: int, n: int = 40) -> dict[str, Any]:
    """Wrong passwords for existing and for unknown names, alternating, each
    from an address of its own (no throttle in the way): the replies and the
    medians of their times, which must not tell the two apart."""
    times: dict[str, list[float]] = {"existing": [], "unknown": []}
    replies: dict[str, set[str]] = {"existing": set(), "unknown": set()}
    for k in range(n):
        for kind in ("existing", "unknown"):
            name = VICTIMS[k % len(VICTIMS)] if kind == "existing" else f"ghost{k}"
            source = f"127.0.2.{1 + (2 * k + (kind == 'unknown')) % 250}"
            t0 = time.perf_counter()
            replies[kind].add(_attempt(port, source, name, secrets.token_hex(8), 30))
            times[kind].append((time.perf_counter() - t0) * 1000)
    return {
        "existing_ms_median": round(statistics.median(times["existing"]), 1),
        "unknown_ms_median": round(statistics.median(times["unknown"]), 1),
        "same_reply": replies["existing"] == replies["unknown"] == {"refused"},
    }


def _hash_ceiling(n: int = 10) -> float:
    from argon2.exceptions import VerifyMismatchError
    from chat_server.config import Settings

    hasher = Settings().argon2_hasher()
    stored = hasher.hash("x")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with contextlib.suppress(VerifyMismatchError):
            hasher.verify(stored, "y")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(seconds: float, attackers: int, addresses: int, per_address: int,
        server_path: Path | None) -> list[dict[str, Any]]:
    import multiprocessing

    import psutil

    from bench.run import ServerProc, StandInProc

    mp = multiprocessing.get_context("spawn")
    standin = StandInProc(tokens=20, delay_ms=0)
    ceiling_ms = _hash_ceiling()
    servers: dict[str, ServerProc] = {}
    sources = [f"127.0.1.{n}" for n in range(1, addresses + 1)]
    rows: list[dict[str, Any]] = []
    try:
        for label, path in [("this tree", None), *([("before", server_path)] if server_path else [])]:
            tmp = Path(tempfile.mkdtemp(prefix="login-flood-"))
            from chat_server.config import Settings

            d = Settings
            server = ServerProc(
                tmp, standin.url, server_path=path, CHAT_RATE_LIMIT="0",
                CHAT_MAX_CONNECTIONS_PER_ADDRESS=str(d.max_connections_per_address),
                CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS=str(d.max_unauthenticated_per_address),
                CHAT_CONNECT_RATE_PER_ADDRESS=str(d.connect_rate_per_address),
                CHAT_CONNECT_BURST_PER_ADDRESS=str(d.connect_burst_per_address))
            server.add_users({OWNER: OWNER_PASSWORD, STALL_USER: STALL_PASSWORD,
                              **{v: secrets.token_hex(8) for v in VICTIMS}})
            servers[label] = server
        for who, server in servers.items():
            server.start()
            assert server.proc is not None
            proc = psutil.Process(server.proc.pid)
            # The owner's usual address: logged in from before the attack.
            assert _attempt(server.port, KNOWN_ADDRESS, OWNER, OWNER_PASSWORD, 30) == "ok"
            enumeration = _enumeration(server.port)
            print(who, "wrong password, existing vs unknown name:", enumeration, flush=True)
            for case in ("baseline", "flood"):
                stop, ready, out = mp.Event(), mp.Event(), mp.Queue()
                pinger = mp.Process(target=ping_loop, args=(server.port, stop, ready, out), daemon=True)
                pinger.start()
                ready.wait(60)
                time.sleep(0.3)
                cpu0 = sum(proc.cpu_times()[:2])
                known: list[tuple[str, float]] = []
                new: list[tuple[str, float]] = []
                owners = [threading.Thread(target=_owner_logins, args=(server.port, src, seconds, res))
                          for src, res in ((KNOWN_ADDRESS, known), (NEW_ADDRESS, new))]
                counts: dict[str, int] = {}
                procs = []
                results = mp.Queue()
                if case == "flood":
                    share = [sources[k::attackers] for k in range(attackers)]
                    procs = [mp.Process(target=_attacker, args=(server.port, seconds, s, per_address,
                                                                results), daemon=True)
                             for s in share]
                    for p in procs:
                        p.start()
                    time.sleep(1.0)  # the flood is on before the owner tries
                for t in owners:
                    t.start()
                for t in owners:
                    t.join(seconds + 60)
                for _ in procs:
                    for k, v in results.get(timeout=seconds + 120).items():
                        counts[k] = counts.get(k, 0) + v
                for p in procs:
                    p.join(30)
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                stop.set()
                rtts = out.get(timeout=120)
                pinger.join(60)

                def summary(logins: list[tuple[str, float]]) -> str:
                    ok = [ms for outcome, ms in logins if outcome == "ok"]
                    med = f"{statistics.median(ok):.0f}" if ok else "-"
                    return f"{len(ok)}/{len(logins)} in, median {med} ms"

                rows.append({
                    "server": who, "case": case,
                    "ping_p50_ms": round(pct(rtts, 50), 2), "ping_p99_ms": round(pct(rtts, 99), 2),
                    "ping_max_ms": round(max(rtts), 1),
                    "owner_known_address": summary(known), "owner_new_address": summary(new),
                    "attempts": sum(counts.values()),
                    "outcomes": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                    "server_cpu_s": round(cpu, 1), "hash_ceiling_ms": round(ceiling_ms, 1),
                    **(enumeration if case == "baseline" else {}),
                })
                print(rows[-1], flush=True)
                time.sleep(2)
            server.stop()
    finally:
        for server in servers.values():
            server.stop()
        standin.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--attackers", type=int, default=2)
    ap.add_argument("--addresses", type=int, default=50)
    ap.add_argument("--per-address", type=int, default=4)
    ap.add_argument("--server-path", type=Path, help="another checkout to compare against")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "login_flood.json")
    args = ap.parse_args(argv)
    rows = run(args.seconds, args.attackers, args.addresses, args.per_address, args.server_path)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
