#!/usr/bin/env python3
"""
bench/floods.py: does a connection flood take the event loop from the
sessions that are logged in?

A live chat-server and stand-in on 127.0.0.1; a logged-in session pings back
to back from a process of its own (``bench.holdback.ping_loop``) while attacker
processes (``--attackers``, default 2, at the lowest CPU priority: an
attacker's CPU is not the server's) run one case for ``--seconds``:

storm      a reconnect storm from one address: connect, send a v2 HELLO,
           close, again, ``--storm-rate`` connections a second in all (default
           2,000: paced, so every server gets the same storm)
storm-v1   the same with a v1 user name frame (no TLS, no HELLO parsing)
bytes      one-byte sends from 20 connections that never log in: each sends a
           HELLO header announcing a 4 KiB body, then the body one byte per
           ``send()`` (TCP_NODELAY), round-robin, ``--byte-rate`` sends a second
           in all (default 100,000: paced, so every server gets the same
           attack); reconnecting when the server cuts one off

Each case reports the other session's PING round trip p50/p99/max next to the
baseline (no attack), how many connections the attackers made and how many
the server refused (``chat_connections_rejected_total``), and the server's
CPU time during the case. ``--server-path DIR`` runs the server of another
checkout as well (before/after, one case right after the other).

Results go to ``--json`` (default bench/results/floods.json) and a Markdown
table on stdout. Run it under ``flock /work/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench.holdback import STALL_PASSWORD, STALL_USER, pct, ping_loop, table  # noqa: E402

#: The attackers' address (Linux routes all of 127.0.0.0/8 to loopback); the
#: pinger connects from 127.0.0.1, so it is never the address being limited.
ATTACKER = "127.0.0.2"
HELLO = b'{"versions":[2],"agent":"storm/1"}'
HELLO_FRAME = f"HELLO {len(HELLO)}".encode().ljust(64) + HELLO
V1_USER = b"5".ljust(64) + b"storm"


#: The attackers' CPU priority (``--nice``).
NICE = int(os.environ.get("FLOODS_NICE", "19"))


def _attacker() -> None:
    """An attacker's CPU is not the server's: on this shared machine the
    attacker processes run at the lowest priority (``--nice 0``: the same as
    the server's), so what is measured is the server's event loop, not the
    scheduler sharing 2 cores with the attack."""
    os.nice(NICE)


def _storm(port: int, seconds: float, first: bytes, rate: float, out: Any) -> None:
    """Reconnect in a loop, ``rate`` connections a second (paced: the same
    storm for every server): connect, send ``first``, close."""
    _attacker()
    made = refused = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        wait = start + (made + refused) / rate - now
        if wait > 0:
            time.sleep(wait)
        s = socket.socket()
        try:
            s.bind((ATTACKER, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(first)
            made += 1
        except OSError:
            refused += 1
        finally:
            s.close()
    out.put({"connections": made, "connect_errors": refused})


def _bytes(port: int, seconds: float, header: bytes, body_size: int, conns: int, rate: float,
           out: Any) -> None:
    """``conns`` connections sending ``header``, then one byte per send(), in
    turn, ``rate`` sends a second in all (paced: the same attack for every
    server, however fast it reads), reconnecting when the server cuts one off."""
    _attacker()
    made = sent = 0
    socks: list[tuple[socket.socket, int]] = []

    def connect() -> tuple[socket.socket, int] | None:
        nonlocal made
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(2)
        try:
            s.bind((ATTACKER, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(header)
        except OSError:
            s.close()
            return None
        made += 1
        s.setblocking(False)
        return s, 0

    for _ in range(conns):
        if (c := connect()) is not None:
            socks.append(c)
    start = time.monotonic()
    end = start + seconds
    rounds = 0
    while time.monotonic() < end and socks:
        rounds += 1
        # Pacing: round k starts k * conns / rate seconds in.
        wait = start + rounds * len(socks) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for i, (s, n) in enumerate(socks):
            try:
                if n % 256 == 255 and s.recv(65536) == b"":
                    raise ConnectionResetError
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                n = -1
            try:
                if n < 0:
                    raise ConnectionResetError
                s.send(b" " if n < body_size - 1 else b"}")
                sent += 1
                n += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                s.close()
                c = connect()
                if c is None:
                    continue
                s, n = c
            socks[i] = (s, n % body_size)
    for s, _ in socks:
        s.close()
    out.put({"connections": made, "bytes_sent": sent})


def _server_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _rejected(metrics_port: int) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "chat_connections_rejected":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def run(seconds: float, attackers: int, cases: list[str], server_path: Path | None,
        env: dict[str, str], byte_rate: float, storm_rate: float) -> list[dict[str, Any]]:
    import multiprocessing

    from chat_server.config import Settings

    from bench.run import ServerProc, StandInProc

    mp = multiprocessing.get_context("spawn")
    standin = StandInProc(tokens=20, delay_ms=0)
    servers: dict[str, ServerProc] = {}
    metrics_ports: dict[str, int] = {}
    for label, path in [("this tree", None), *([("before", server_path)] if server_path else [])]:
        tmp = Path(tempfile.mkdtemp(prefix="floods-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            metrics_ports[label] = probe.getsockname()[1]
        # The per-address limits at their defaults (ServerProc lifts them for
        # load runs): the flood comes from one address, as an attacker's would.
        d = Settings
        servers[label] = ServerProc(
            tmp, standin.url, server_path=path, CHAT_RATE_LIMIT="0",
            CHAT_ARGON2_TIME_COST="1", CHAT_ARGON2_MEMORY_KIB="8",
            CHAT_MAX_CONNECTIONS_PER_ADDRESS=str(d.max_connections_per_address),
            CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS=str(d.max_unauthenticated_per_address),
            CHAT_CONNECT_RATE_PER_ADDRESS=str(d.connect_rate_per_address),
            CHAT_CONNECT_BURST_PER_ADDRESS=str(d.connect_burst_per_address),
            CHAT_METRICS_HOST="127.0.0.1", CHAT_METRICS_PORT=str(metrics_ports[label]), **env)
    rows: list[dict[str, Any]] = []
    attacks: dict[str, Callable[[int, Any], tuple[Callable[..., None], tuple[Any, ...]]]] = {
        "storm": lambda port, out: (_storm, (port, seconds, HELLO_FRAME, storm_rate / attackers, out)),
        "storm-v1": lambda port, out: (_storm, (port, seconds, V1_USER, storm_rate / attackers, out)),
        "bytes": lambda port, out: (_bytes, (port, seconds, b"HELLO 4000".ljust(64), 4000,
                                             20 // attackers, byte_rate / attackers, out)),
    }
    try:
        for server in servers.values():
            server.add_users({STALL_USER: STALL_PASSWORD})
            server.start()
        for case in ["baseline", *cases]:
            for who, server in servers.items():
                port = server.port
                stop, ready, out = mp.Event(), mp.Event(), mp.Queue()
                pinger = mp.Process(target=ping_loop, args=(port, stop, ready, out), daemon=True)
                pinger.start()
                ready.wait(60)
                time.sleep(0.3)
                assert server.proc is not None
                cpu0, rej0 = _server_cpu(server.proc.pid), _rejected(metrics_ports[who])
                t0 = time.perf_counter()
                detail: dict[str, float] = {}
                if case == "baseline":
                    time.sleep(seconds)
                else:
                    results = mp.Queue()
                    procs = []
                    for _ in range(attackers):
                        target, args = attacks[case](port, results)
                        procs.append(mp.Process(target=target, args=args, daemon=True))
                    for p in procs:
                        p.start()
                    for _ in procs:
                        for k, v in results.get(timeout=seconds + 120).items():
                            detail[k] = detail.get(k, 0) + v
                    for p in procs:
                        p.join(30)
                took = time.perf_counter() - t0
                cpu = _server_cpu(server.proc.pid) - cpu0
                rejected = _rejected(metrics_ports[who]) - rej0
                time.sleep(0.2)
                stop.set()
                rtts = out.get(timeout=120)
                pinger.join(60)
                rows.append({
                    "server": who, "case": case, "seconds": round(took, 1), "pings": len(rtts),
                    "rtt_p50_ms": round(pct(rtts, 50), 2), "rtt_p99_ms": round(pct(rtts, 99), 2),
                    "rtt_max_ms": round(max(rtts), 2),
                    "server_cpu_s": round(cpu, 2),
                    "connections": int(detail.get("connections", 0)),
                    "refused": int(rejected),
                    "bytes_sent": int(detail.get("bytes_sent", 0)),
                    "load_1m": round(os.getloadavg()[0], 1),
                })
                print(rows[-1], flush=True)
    finally:
        for server in servers.values():
            server.stop()
        standin.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="storm,storm-v1,bytes")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--attackers", type=int, default=2)
    ap.add_argument("--storm-rate", type=float, default=2_000,
                    help="connections a second the storm cases open in all")
    ap.add_argument("--byte-rate", type=float, default=100_000,
                    help="bytes a second the 'bytes' case sends in all (one per send)")
    ap.add_argument("--server-path", type=Path, help="another checkout to compare against")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server settings (both servers)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "floods.json")
    ap.add_argument("--nice", type=int, default=19, help="the attackers' nice value")
    args = ap.parse_args(argv)
    os.environ["FLOODS_NICE"] = str(args.nice)  # the spawned attackers read it
    env = dict(e.split("=", 1) for e in args.env)
    rows = run(args.seconds, args.attackers, args.cases.split(","), args.server_path, env,
               args.byte_rate, args.storm_rate)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
