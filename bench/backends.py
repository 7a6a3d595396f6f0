#!/usr/bin/env python3
"""
bench/backends.py: the model side, measured against a ceiling in the same run.

Two cases (``--cases``, default both):

real     A real model (llama.cpp's llama-server with SmolLM2-135M, the local
         image of docs/ENGINES.md, greedy decoding so both paths generate the
         same tokens): time to first token and tokens/s through chat-server
         (a v2 client; CHAT_BACKENDS=cpu=openai:...) against the same requests
         sent straight to llama-server with the official ``openai`` client,
         interleaved (server, direct, server, ...). Targets: first token within
         5 ms of direct (p50), tokens/s >= 0.97 of direct (median).
scaling  Ollama API stand-ins that take 20 ms a token, 1, 2 and 4 of them as
         backends with CHAT_BACKEND_<NAME>_PARALLEL=2: messages/s through
         chat-server with enough clients to keep every slot busy. Target:
         messages/s >= 0.9 x backends x the one-backend figure. ``--plot``
         draws docs/bench-backends.png.

Everything runs on 127.0.0.1 (llama-server in a container published there) in
processes this tool starts and stops. Results: ``--json`` (default
bench/results/backends.json) and Markdown on stdout; ``--strict`` exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path[:0] = [str(REPO), str(TESTS)]

HOST = "127.0.0.1"
PASSWORD = "bench password 123"
FAST_HASH = {"CHAT_ARGON2_TIME_COST": "1", "CHAT_ARGON2_MEMORY_KIB": "1024",
             "CHAT_ARGON2_PARALLELISM": "1"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHAT_", "OLLAMA_", "STANDIN_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))] if s else float("nan")


# ---------------------------------------------------------------------------- processes
class StandIn:
    def __init__(self, tokens: int, delay_ms: float, model: str) -> None:
        env = _env()
        env["PYTHONPATH"] = str(TESTS)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_standin", "--host", HOST, "--port", "0",
             "--models", model, "--tokens", str(tokens), "--delay-ms", str(delay_ms)],
            cwd=TESTS, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        m = re.match(r"Listening on (\S+):(\d+)", self.proc.stdout.readline())
        if m is None:
            self.proc.kill()
            raise RuntimeError("stand-in did not start")
        self.url = f"http://{HOST}:{m.group(2)}"
        threading.Thread(target=lambda: [None for _ in self.proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Server:
    """chat-server on a free port with a temp database and ``users`` users."""

    def __init__(self, workdir: Path, users: int, **env: str) -> None:
        from chat_server.cli import main as cli_main

        workdir.mkdir(parents=True, exist_ok=True)
        self.env = _env() | FAST_HASH | {
            "CHAT_HOST": HOST, "CHAT_PORT": "0", "CHAT_DB": str(workdir / "chat.db"),
            "CHAT_CUSS_WORDS_FILE": str(REPO / "cuss_words.txt"), "CHAT_RATE_LIMIT": "0",
            "CHAT_LOG_LEVEL": "warning", "CHAT_SHUTDOWN_GRACE": "5",
            "MALLOC_MMAP_THRESHOLD_": "1048576",
        } | env
        import io

        self.users = [f"user{i}" for i in range(users)]
        for name in self.users:
            rc = cli_main(["users", "add", name, "--password-stdin"], environ=self.env,
                          stdin=io.StringIO(PASSWORD + "\n"), stdout=io.StringIO(),
                          stderr=io.StringIO())
            if rc != 0:
                raise RuntimeError(f"users add {name} failed")
        self.log = workdir / "server.log"
        with self.log.open("ab") as out:
            # info level for the start-up lines we wait for
            self.proc = subprocess.Popen([sys.executable, "-m", "chat_server"],
                                         env=self.env | {"CHAT_LOG_LEVEL": "info"}, cwd=workdir,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.port = int(self._wait(r"listening on \S+:(\d+)").group(1))
        self._wait(r"model ready")

    def _wait(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text("utf-8", "replace")
            if (m := re.search(pattern, text)) is not None:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chat-server: no {pattern!r}:\n{text[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------- clients
@dataclass
class Answer:
    first: float  # seconds from sending to the first text
    total: float  # seconds from sending to the end
    tokens: int  # the model's count
    ok: bool = True
    last: float = 0.0  # seconds from sending to the last text
    model_first: float | None = None  # the server's END.first_token_ms (its model's first token)

    @property
    def rate(self) -> float:
        """Tokens per second while the answer streams (first to last text)."""
        span = self.last - self.first
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else float("nan")


class V2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from chatcore.protocol import Connection, Role

        self.reader, self.writer = reader, writer
        self.conn = Connection(Role.CLIENT, version=2)
        self.mid = 0

    @classmethod
    async def open(cls, port: int, user: str) -> V2:
        from chatcore.protocol import Authenticate, AuthResult, ClientHello

        self = cls(*await asyncio.open_connection(HOST, port))
        self.writer.write(self.conn.send(ClientHello((2,), agent="bench-backends/1")))
        await self.event()
        self.writer.write(self.conn.send(Authenticate(user, PASSWORD)))
        result = await self.event()
        if not (isinstance(result, AuthResult) and result.ok):
            raise RuntimeError(f"login failed: {result!r}")
        return self

    async def event(self) -> Any:
        from chatcore.protocol import NEED_DATA

        while True:
            ev = self.conn.next_event()
            if out := self.conn.data_to_send():
                self.writer.write(out)
            if ev is not NEED_DATA:
                return ev
            self.conn.receive_data(await self.reader.read(65536))

    async def chat(self, text: str, conversation: str) -> Answer:
        from chatcore.protocol import AnswerDelta, AnswerEnd, ChatMessage

        self.mid += 1
        t0 = time.perf_counter()
        self.writer.write(self.conn.send(ChatMessage(text, message_id=self.mid,
                                                     conversation=conversation)))
        first = None
        last = 0.0
        while True:
            ev = await self.event()
            if isinstance(ev, AnswerDelta):
                last = time.perf_counter() - t0
                if first is None:
                    first = last
            elif isinstance(ev, AnswerEnd):
                now = time.perf_counter() - t0
                return Answer(first if first is not None else now, now, ev.answer_tokens,
                              last=last, model_first=ev.first_token_ms / 1000)
            elif not isinstance(ev, AnswerDelta) and type(ev).__name__ in ("Error",
                                                                           "ConnectionClosed"):
                now = time.perf_counter() - t0
                return Answer(first or now, now, 0, ok=False)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# ---------------------------------------------------------------------------- cases
PROMPT = "List the numbers from one to forty in words, separated by commas."


async def direct(client: Any, model: str, system: str) -> Answer:
    t0 = time.perf_counter()
    first = None
    last = 0.0
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": PROMPT}])
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.perf_counter() - t0
                if first is None:
                    first = last
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    now = time.perf_counter() - t0
    return Answer(first if first is not None else now, now, tokens, last=last)


async def case_real(rounds: int, root: Path) -> dict[str, Any]:
    import openai
    from chat_server.config import DEFAULT_SYSTEM_PROMPT

    from tests.fixtures.llamacpp import IMAGE, MODEL_FILE, LlamaServer

    llama = LlamaServer(image=IMAGE, model_file=MODEL_FILE, parallel=1,
                        extra_args=["--temp", "0", "-n", "96"]).start()
    server = None
    try:
        server = await asyncio.to_thread(
            lambda: Server(root / "real", 1, CHAT_BACKENDS=f"cpu=openai:{llama.base_url}",
                           CHAT_MODEL=llama.model, CHAT_BACKEND_CPU_PARALLEL="1"))
        client = openai.AsyncOpenAI(base_url=llama.base_url, api_key="no-key", max_retries=0)
        v2 = await V2.open(server.port, server.users[0])
        via, straight = [], []
        # Warm-up (prompt cache, connections), not counted.
        await v2.chat(PROMPT, "warm")
        await direct(client, llama.model, DEFAULT_SYSTEM_PROMPT)
        for i in range(rounds):  # interleaved; a fresh conversation each time
            via.append(await v2.chat(PROMPT, f"c{i}"))
            straight.append(await direct(client, llama.model, DEFAULT_SYSTEM_PROMPT))
        await v2.close()
        await client.close()
    finally:
        if server is not None:
            server.stop()
        llama.remove()
    model_first = statistics.median(a.model_first or 0.0 for a in via) * 1000
    ttft_server = statistics.median(a.first for a in via) * 1000
    ttft_direct = statistics.median(a.first for a in straight) * 1000
    rate_server = statistics.median(a.rate for a in via)
    rate_direct = statistics.median(a.rate for a in straight)
    return {
        "rounds": rounds,
        "errors": sum(not a.ok for a in via),
        "tokens_server": statistics.median(a.tokens for a in via),
        "tokens_direct": statistics.median(a.tokens for a in straight),
        "ttft_ms_server_p50": ttft_server, "ttft_ms_direct_p50": ttft_direct,
        "ttft_ms_server_p90": pct([a.first * 1000 for a in via], 90),
        "ttft_ms_direct_p90": pct([a.first * 1000 for a in straight], 90),
        "ttft_delta_ms": ttft_server - ttft_direct,
        # When the server had the model's first token (END.first_token_ms): the
        # difference to the first DELTA is what the answer filter held back.
        "model_first_token_ms_server_p50": model_first,
        "model_first_token_delta_ms": model_first - ttft_direct,
        "tokens_per_s_server": rate_server, "tokens_per_s_direct": rate_direct,
        "rate_ratio": rate_server / rate_direct,
        # Each server answer against the direct one right after it (same load
        # on the machine), then the median: steadier on a shared machine.
        "rate_ratio_paired_median": statistics.median(
            v.rate / d.rate for v, d in zip(via, straight, strict=True)),
        "targets": {"ttft_within_5ms": ttft_server - ttft_direct <= 5.0,
                    "rate_at_least_0.97": statistics.median(
                        v.rate / d.rate for v, d in zip(via, straight, strict=True)) >= 0.97},
    }


async def scaling_run(backends: int, clients_per_slot: int, messages: int, tokens: int,
                      delay_ms: float, root: Path) -> dict[str, Any]:
    stands = [StandIn(tokens, delay_ms, "llama3.2") for _ in range(backends)]
    names = [f"b{i}" for i in range(backends)]
    env = {"CHAT_BACKENDS": ",".join(f"{n}=ollama:{s.url}" for n, s in zip(names, stands, strict=True))}
    env |= {f"CHAT_BACKEND_{n.upper()}_PARALLEL": "2" for n in names}
    clients_n = backends * 2 * clients_per_slot
    server = None
    try:
        server = await asyncio.to_thread(lambda: Server(root / f"scale{backends}", clients_n,
                                                        **env))
        clients = await asyncio.gather(*(V2.open(server.port, u) for u in server.users))
        answers: list[Answer] = []

        async def run(idx: int, c: V2) -> None:
            for i in range(messages):
                answers.append(await c.chat(f"client {idx} message {i}", f"c{idx}"))

        t0 = time.perf_counter()
        await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
        wall = time.perf_counter() - t0
        await asyncio.gather(*(c.close() for c in clients))
    finally:
        if server is not None:
            server.stop()
        for s in stands:
            s.stop()
    return {"backends": backends, "clients": clients_n, "messages": len(answers),
            "errors": sum(not a.ok for a in answers), "wall_s": wall,
            "msg_per_s": len(answers) / wall,
            "answer_ms_p50": pct([a.total * 1000 for a in answers], 50),
            "first_ms_p50": pct([a.first * 1000 for a in answers], 50)}


async def case_scaling(messages: int, root: Path) -> dict[str, Any]:
    runs = []
    for n in (1, 2, 4):
        runs.append(await scaling_run(n, 2, messages, 20, 20.0, root))
    one = runs[0]["msg_per_s"]
    for r in runs:
        r["vs_ideal"] = r["msg_per_s"] / (r["backends"] * one)
    return {"token_delay_ms": 20, "tokens": 20, "parallel_per_backend": 2, "runs": runs,
            "targets": {"scaling_at_least_0.9": all(r["vs_ideal"] >= 0.9 for r in runs)}}


def plot(scaling: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = scaling["runs"]
    xs = [r["backends"] for r in runs]
    ys = [r["msg_per_s"] for r in runs]
    one = ys[0]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(xs, [x * one for x in xs], "--", color="grey", label="ideal: backends x one backend")
    ax.plot(xs, [0.9 * x * one for x in xs], ":", color="grey", label="target: 0.9 x ideal")
    ax.plot(xs, ys, "o-", color="tab:blue", label="through chat-server")
    for x, y, r in zip(xs, ys, runs, strict=True):
        ax.annotate(f"{y:.1f} ({r['vs_ideal']:.2f})", (x, y), textcoords="offset points",
                    xytext=(6, -12))
    ax.set_xlabel("backends (stand-ins, 20 ms a token, max parallel 2 each)")
    ax.set_ylabel("messages / s")
    ax.set_xticks(xs)
    ax.set_title("Scaling over backends")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def markdown(results: dict[str, Any]) -> str:
    lines = []
    if "real" in results:
        r = results["real"]
        lines += ["| real model (SmolLM2-135M, llama-server) | through chat-server | direct | "
                  "difference / ratio | target |", "| --- | --- | --- | --- | --- |",
                  f"| time to first token p50 (ms) | {r['ttft_ms_server_p50']:.1f} | "
                  f"{r['ttft_ms_direct_p50']:.1f} | {r['ttft_delta_ms']:+.1f} ms | <= +5 ms |",
                  f"| model's first token at the server p50 (ms) | "
                  f"{r['model_first_token_ms_server_p50']:.1f} | {r['ttft_ms_direct_p50']:.1f} | "
                  f"{r['model_first_token_delta_ms']:+.1f} ms | (overhead before the filter) |",
                  f"| tokens/s (median) | {r['tokens_per_s_server']:.1f} | "
                  f"{r['tokens_per_s_direct']:.1f} | {r['rate_ratio']:.3f} (paired median "
                  f"{r['rate_ratio_paired_median']:.3f}) | >= 0.97 |", ""]
    if "scaling" in results:
        lines += ["| backends | clients | messages | msg/s | vs backends x one | errors |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in results["scaling"]["runs"]:
            lines.append(f"| {r['backends']} | {r['clients']} | {r['messages']} | "
                         f"{r['msg_per_s']:.2f} | {r['vs_ideal']:.3f} | {r['errors']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="real,scaling")
    p.add_argument("--rounds", type=int, default=15, help="real: requests per path")
    p.add_argument("--messages", type=int, default=10, help="scaling: messages per client")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "backends.json")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--strict", action="store_true")
    a = p.parse_args(argv)
    cases = {c.strip() for c in a.cases.split(",") if c.strip()}
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        root = Path(tmp)
        if "real" in cases:
            results["real"] = asyncio.run(case_real(a.rounds, root))
        if "scaling" in cases:
            results["scaling"] = asyncio.run(case_scaling(a.messages, root))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    if a.plot is not None and "scaling" in results:
        plot(results["scaling"], a.plot)
    missed = [k for case in ("real", "scaling") if case in results
              for k, ok in results[case]["targets"].items() if not ok]
    if missed:
        print("targets missed:", ", ".join(missed))
    return 1 if a.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
