#!/usr/bin/env python3
"""
bench/tls.py: what TLS costs chat-server, and whether handshakes stall others.

Everything runs on 127.0.0.1 in processes this tool starts and stops (the
stand-in, chat-server with its generated certificate, and a bare asyncio TLS
server as the ceiling). Loops are bounded in count and time.

handshakes  N sequential TLS handshakes (connect, handshake, close) against
            chat-server and, in the same run, against a bare asyncio TLS server
            with the same certificate (the ceiling): handshakes/s and the ratio.
flood       a logged-in plaintext session PINGs every 20 ms; its round trips
            (p50/p99/max) alone; while another process runs W workers that open
            and close plaintext connections back to back (the comparison: the
            same churn without TLS); while it runs W workers doing TLS handshakes
            back to back; and while S sockets sit in a stalled handshake (half a
            ClientHello). Target: p99 <= 50 ms (the bound for stalls by others).
first-byte  one v2 client, M sequential messages, plaintext then TLS: first
            answer byte p50 and the difference.

    .venv/bin/python bench/tls.py            # all cases, about a minute here
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import HOST, ServerProc, StandInProc, V2Client, pct

USER, PASSWORD = "bench", "bench password"

_CEILING = r"""
import asyncio, ssl, sys
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
async def handle(reader, writer):
    try:
        await reader.read(1)
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def handshake_once(port: int, ctx: ssl.SSLContext) -> None:
    _reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def handshakes(port: int, n: int) -> float:
    ctx = client_context()
    t0 = time.perf_counter()
    for _ in range(n):
        await handshake_once(port, ctx)
    return n / (time.perf_counter() - t0)


async def ping_rtts(client: V2Client, seconds: float, interval: float = 0.02) -> list[float]:
    from chatcore.protocol import Ping, Pong

    out: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t0 = time.perf_counter()
        client._send(Ping(str(i)))
        event = await client.next_event()
        assert isinstance(event, Pong), event
        out.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(interval)
    return out


async def flood(port: int, seconds: float, workers: int, tls: bool) -> int:
    """Connections opened (and, with ``tls``, handshaken) and closed, back to back."""
    ctx = client_context() if tls else None
    end = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            _reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
            if not tls:
                writer.write(b"H")  # past the gate's peek, as a client would be
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def flood_in_another_process(port: int, seconds: float, workers: int, tls: bool) -> int:
    """The flood runs in its own process, so its CPU work does not delay the
    PING client's own event loop (only the server's, which is what is measured)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--flood-worker", str(port), str(seconds), str(workers),
        "1" if tls else "0", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return int(out.decode().strip() or 0)


def half_client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


def summary(rtts: list[float]) -> dict[str, float]:
    over = [round(r) for r in rtts if r > 50]
    return {"n": len(rtts), "p50_ms": round(pct(rtts, 50), 2), "p90_ms": round(pct(rtts, 90), 2),
            "p99_ms": round(pct(rtts, 99), 2), "max_ms": round(max(rtts), 2),
            "over_50ms": len(over), "first_over_50ms_at": next(
                (i for i, r in enumerate(rtts) if r > 50), -1)}


async def first_bytes(port: int, messages: int, tls: bool) -> list[float]:
    from chatcore.protocol import Authenticate, AuthResult, ClientHello, ServerHello

    reader, writer = await asyncio.open_connection(HOST, port, ssl=client_context() if tls else None)
    client = V2Client(reader, writer)
    client._send(ClientHello((2,), agent="bench-tls/1"))
    assert isinstance(await client.next_event(), ServerHello)
    client._send(Authenticate(USER, PASSWORD))
    result = await client.next_event()
    assert isinstance(result, AuthResult) and result.ok, result
    out = []
    for i in range(messages):
        sample = await client.chat(f"message {i}")
        assert sample.ok, sample
        assert sample.first is not None
        out.append(sample.first * 1000)
    await client.close()
    return out


async def amain(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    standin = StandInProc(tokens=20, delay_ms=0)
    server = ServerProc(root / "server", standin.url, CHAT_RATE_LIMIT="0",
                        CHAT_ARGON2_TIME_COST="1", CHAT_ARGON2_MEMORY_KIB="1024")
    ceiling: subprocess.Popen[str] | None = None
    try:
        await asyncio.to_thread(server.add_users, {USER: PASSWORD})  # the CLI runs its own loop
        server.start()
        tls_dir = root / "server" / "tls"
        ceiling = subprocess.Popen(
            [sys.executable, "-c", _CEILING, str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")],
            stdout=subprocess.PIPE, text=True)
        assert ceiling.stdout is not None
        ceiling_port = int(ceiling.stdout.readline())
        if "handshakes" in a.cases:
            rounds = []
            for _ in range(a.repeat):  # interleaved: server, then ceiling
                s = await handshakes(server.port, a.handshakes)
                c = await handshakes(ceiling_port, a.handshakes)
                rounds.append({"server_per_s": round(s, 1), "ceiling_per_s": round(c, 1),
                               "ratio": round(s / c, 2)})
            results["handshakes"] = {"n": a.handshakes, "rounds": rounds,
                                     "median_ratio": sorted(r["ratio"] for r in rounds)[len(rounds) // 2]}
        if "flood" in a.cases:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            client = V2Client(reader, writer)
            from chatcore.protocol import Authenticate, ClientHello

            client._send(ClientHello((2,), agent="bench-tls/1"))
            await client.next_event()
            client._send(Authenticate(USER, PASSWORD))
            await client.next_event()
            alone = await ping_rtts(client, a.seconds)
            ping_task = asyncio.create_task(ping_rtts(client, a.seconds))
            n_plain = await flood_in_another_process(server.port, a.seconds, a.workers, False)
            during_plain = await ping_task
            ping_task = asyncio.create_task(ping_rtts(client, a.seconds))
            n = await flood_in_another_process(server.port, a.seconds, a.workers, True)
            during = await ping_task
            stalled_socks = []
            payload = half_client_hello()
            for _ in range(a.stalled):
                _r, w = await asyncio.open_connection(HOST, server.port)
                w.write(payload)
                stalled_socks.append(w)
            during_stalled = await ping_rtts(client, a.seconds)
            for w in stalled_socks:
                w.close()
            await client.close()
            results["flood"] = {
                "alone": summary(alone),
                "during_plaintext_connection_flood": {
                    **summary(during_plain), "workers": a.workers,
                    "connections_per_s": round(n_plain / a.seconds, 1)},
                "during_handshake_flood": {**summary(during), "workers": a.workers,
                                           "handshakes_per_s": round(n / a.seconds, 1)},
                "during_stalled_handshakes": {**summary(during_stalled), "stalled": a.stalled},
            }
        if "first-byte" in a.cases:
            plain = await first_bytes(server.port, a.messages, tls=False)
            secure = await first_bytes(server.port, a.messages, tls=True)
            results["first_byte"] = {
                "messages": a.messages,
                "plaintext_p50_ms": round(pct(plain, 50), 3), "tls_p50_ms": round(pct(secure, 50), 3),
                "plaintext_p99_ms": round(pct(plain, 99), 3), "tls_p99_ms": round(pct(secure, 99), 3),
            }
        results["server_tracebacks"] = server.tracebacks()
    finally:
        if ceiling is not None:
            ceiling.kill()
            ceiling.wait()
        server.stop()
        standin.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--flood-worker"]:
        port, seconds, workers, tls = args[1:5]
        print(asyncio.run(flood(int(port), float(seconds), int(workers), tls == "1")))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="handshakes,flood,first-byte")
    p.add_argument("--handshakes", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--stalled", type=int, default=200)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "tls.json")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        results = asyncio.run(amain(a, Path(tmp)))
    text = json.dumps(results, indent=2)
    print(text)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
