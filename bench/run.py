#!/usr/bin/env python3
"""
bench/run.py: load benchmarks of chat-server, measured against a ceiling.

Everything runs on 127.0.0.1 in subprocesses this tool starts and stops: the
Ollama API stand-in (``tests/ollama_standin``) and ``chat-server`` (a temp
SQLite file, users created with the real CLI, ``chat-server users add NAME
--password-stdin``). Each case runs the SAME work twice against the same
stand-in: once through chat-server (v1 and/or v2 clients), once straight to the
stand-in with the official ``ollama.AsyncClient`` (the *ceiling*: what a
client gets with no chat server in between). The ratio server/ceiling is the
number to watch; absolute numbers depend on the machine.

Cases (``--cases``, default all):

throughput  N clients x M messages over v1 and v2 (default 50 x 20, 20 tokens,
            no delay): first-byte and answer latency p50/p99, messages/s, ratio.
first-byte  one v2 client, many sequential messages: first answer byte vs the
            ceiling's first byte (target: within 2 ms at p50).
idle        K idle authenticated connections (default 5000): server RSS per
            connection, then a new client's time to its first answer chunk.
fairness    CHAT_MAX_PARALLEL=2: one user sends 50 messages back to back,
            10 others one each; do all 10 finish before the burster's 5th?
sweep       latency against the number of clients (1, 10, 25, 50) over v2 and
            the ceiling; ``--plot`` draws docs/bench-latency.png from it.

Results go to ``--json`` (default bench/results/latest.json) and a Markdown
table on stdout. ``--profile`` records the server under the throughput case
with py-spy (if installed) and prints its hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
HOST = "127.0.0.1"
MODEL = "llama3.2"
HEADER = 64
V1_TERMINATOR = b" " * HEADER
V1_USERNAME_ACCEPTED = b" username accepted"
V1_PASSWORD_ACCEPTED = b" password accepted"

#: Cheap argon2 for the idle case: 5000 logins at the production cost (OWASP
#: minimum, ~40 ms and 19 MiB each) would measure the hash, not the server.
CHEAP_ARGON2 = {
    "CHAT_ARGON2_TIME_COST": "1",
    "CHAT_ARGON2_MEMORY_KIB": "1024",
    "CHAT_ARGON2_PARALLELISM": "1",
}
#: Never route loopback traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------- stats
def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


@dataclass
class Sample:
    """One message: seconds to the first answer byte and to the end of the answer."""

    first: float | None
    total: float
    ok: bool
    error: str = ""


@dataclass
class Result:
    case: str
    target: str  # "v1", "v2" or "ceiling"
    clients: int
    messages: int
    wall: float
    samples: list[Sample] = field(repr=False)
    rss_start: int | None = None
    rss_peak: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok = [s for s in self.samples if s.ok]
        firsts = [s.first * 1000 for s in ok if s.first is not None]
        totals = [s.total * 1000 for s in ok]
        errors = [s.error for s in self.samples if not s.ok]
        return {
            "case": self.case, "target": self.target, "clients": self.clients,
            "messages": self.messages, "sent": len(self.samples), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5],
            "first_p50_ms": pct(firsts, 50), "first_p99_ms": pct(firsts, 99),
            "total_p50_ms": pct(totals, 50), "total_p99_ms": pct(totals, 99),
            "msgs_per_s": len(ok) / self.wall if self.wall > 0 else float("nan"),
            "wall_s": self.wall,
            "rss_start_mib": None if self.rss_start is None else self.rss_start / 2**20,
            "rss_peak_mib": None if self.rss_peak is None else self.rss_peak / 2**20,
            **self.extra,
        }


# ---------------------------------------------------------------------------- processes
def _env_without_ours() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHAT_", "OLLAMA_", "STANDIN_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class StandInProc:
    """``python -m ollama_standin`` on a free port."""

    def __init__(self, tokens: int, delay_ms: float) -> None:
        env = _env_without_ours()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_standin", "--host", HOST, "--port", "0",
             "--models", MODEL, "--tokens", str(tokens), "--delay-ms", str(delay_ms),
             "--pull-seconds", "0.1"],
            cwd=TESTS, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.match(r"Listening on (\S+):(\d+)", line)
        if m is None:
            self.proc.kill()
            raise RuntimeError(f"stand-in did not start: {line!r}")
        self.port = int(m.group(2))
        self.url = f"http://{HOST}:{self.port}"
        # Keep draining its output so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()

    def control(self, **settings: Any) -> Any:
        req = urllib.request.Request(self.url + "/_standin/control",
                                     data=json.dumps(settings).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with _OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ServerProc:
    """``python -m chat_server`` on a free port, with its own temp database."""

    def __init__(self, workdir: Path, standin_url: str, *, server_path: Path | None = None,
                 **overrides: str) -> None:
        self.dir = workdir
        #: Another checkout whose server (and CLI) to run, for before/after figures.
        self.server_path = server_path
        workdir.mkdir(parents=True, exist_ok=True)
        # The shipped list, so the answer filter does its real work.
        words = REPO / "cuss_words.txt"
        self.env = _env_without_ours()
        self.env.update({
            "CHAT_HOST": HOST, "CHAT_PORT": "0", "CHAT_DB": str(workdir / "chat.db"),
            "CHAT_CUSS_WORDS_FILE": str(words), "OLLAMA_HOST": standin_url,
            "OLLAMA_MODEL": MODEL, "CHAT_LOG_FORMAT": "text", "CHAT_LOG_LEVEL": "info",
            "CHAT_SHUTDOWN_GRACE": "5",
            # Every load client connects from 127.0.0.1: lift the per-address limits.
            "CHAT_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
            "CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS": "1000000",
            "CHAT_CONNECT_RATE_PER_ADDRESS": "0",
            # No allocator variables: the server applies its own policy
            # (chat_server/memory.py), as it must when run natively.
        })
        for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"):
            self.env.pop(var, None)
        if server_path is not None:
            root = server_path.resolve()
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [
                str(root / "services" / "server"), str(root / "services" / "shared"),
                self.env.get("PYTHONPATH")]))
        self.env.update(overrides)
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def add_users(self, users: dict[str, str]) -> None:
        """Create users with the real CLI (its ``main()`` in-process: no interpreter
        start-up per user, same code path as ``chat-server users add``)."""
        if self.server_path is not None:  # that checkout's own CLI, for its own schema
            for name, password in users.items():
                subprocess.run([sys.executable, "-m", "chat_server", "users", "add", name,
                                "--password-stdin"], input=password + "\n", text=True,
                               env=self.env, cwd=self.dir, check=True, capture_output=True)
            return
        from chat_server.cli import main as cli_main

        def add_all() -> None:
            for name, password in users.items():
                out, err = io.StringIO(), io.StringIO()
                rc = cli_main(["users", "add", name, "--password-stdin"], environ=self.env,
                              stdin=io.StringIO(password + "\n"), stdout=out, stderr=err)
                if rc != 0:
                    raise RuntimeError(f"users add {name}: {err.getvalue().strip()}")

        # The CLI runs its own event loop: in a thread of its own, not inside ours.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(add_all).result()

    def command(self) -> list[str]:
        """Natively, as a user runs it after ``pip install``: the console script."""
        script = Path(sys.executable).with_name("chat-server")
        if script.exists() and self.server_path is None:
            return [str(script)]
        return [sys.executable, "-m", "chat_server"]

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env,
                                         cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        m = self._wait(re.compile(r"listening on (\S+):(\d+)"), timeout)
        self.port = int(m.group(2))
        self._wait(re.compile("model ready"), timeout)

    def _wait(self, rx: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text("utf-8", "replace")
            if (m := rx.search(text)) is not None:
                return m
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chat-server did not start ({rx.pattern}):\n{text[-3000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def tracebacks(self) -> int:
        return self.log_path.read_text("utf-8", "replace").count("Traceback")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


IMAGE = "chat-bench/server:local"
BASE_IMAGE = "chat-local/python:3.11-bookworm"


def build_image(base: str) -> str:
    """Build the server image from Dockerfile.server on ``base`` (a local image;
    ``.ci/build-base-image.sh`` makes one where no registry is reachable)."""
    print(f"  building {IMAGE} on {base} (docker compose build) ...", flush=True)
    # Through compose: the Dockerfile needs BuildKit, which compose brings along.
    env = {**os.environ, "PYTHON_IMAGE": base, "CHAT_IMAGE_PREFIX": IMAGE.split("/")[0],
           "CHAT_IMAGE_TAG": IMAGE.rsplit(":", 1)[1], "CHAT_BOOTSTRAP_PASSWORD": "unused"}
    subprocess.run(["docker", "compose", "-p", "chat-bench-build", "build", "server"],
                   cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return IMAGE


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ImageServerProc(ServerProc):
    """The server image in a container on the host's network namespace, so it
    listens on 127.0.0.1 like the native one and reaches the stand-in there. The
    database is created on the host (the same CLI) in a directory mounted at /data."""

    def __init__(self, workdir: Path, standin_url: str, image: str, **overrides: str) -> None:
        super().__init__(workdir, standin_url, **overrides)
        self.image = image
        self.name = f"chat-bench-{os.getpid()}-{workdir.name}"
        self.env["CHAT_PORT"] = str(free_port())
        self._logs: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        os.chmod(self.dir, 0o777)
        for f in self.dir.glob("chat.db*"):
            os.chown(f, 10001, 10001)
        env = {k: v for k, v in self.env.items()
               if k.startswith(("CHAT_", "OLLAMA_", "MALLOC_"))}
        env.update({"CHAT_DB": "/data/chat.db", "CHAT_CUSS_WORDS_FILE": "/app/cuss_words.txt"})
        # The container may not raise its file limit above ours.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        args = ["docker", "run", "-d", "--name", self.name, "--network", "host",
                "--ulimit", f"nofile={nofile}:{nofile}", "-v", f"{self.dir}:/data"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        subprocess.run([*args, self.image], check=True, stdout=subprocess.DEVNULL)
        log = self.log_path.open("ab")
        self._logs = subprocess.Popen(["docker", "logs", "-f", self.name], stdout=log,
                                      stderr=subprocess.STDOUT)
        log.close()
        self.proc = self._logs  # for _wait's liveness check
        m = self._wait(re.compile(r"listening on (\S+):(\d+)"), timeout)
        self.port = int(m.group(2))
        self._wait(re.compile("model ready"), timeout)
        # Started by dockerd, not by us: give it our niceness, as the native
        # server inherits it (``nice bench/run.py`` on a shared machine).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.pid, os.getpriority(os.PRIO_PROCESS, 0))

    @property
    def pid(self) -> int:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.name],
                             check=True, capture_output=True, text=True).stdout
        return int(out.strip())

    def stop(self) -> int | None:
        subprocess.run(["docker", "stop", "-t", "30", self.name], capture_output=True)
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", self.name],
                              capture_output=True, text=True).stdout.strip()
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        if self._logs is not None:
            self._logs.terminate()
            self._logs.wait(10)
        self.proc = None
        return int(code) if code.isdigit() else None


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process (default: this one) has used so far."""
    if pid is None:
        return time.process_time()
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


class RssSampler:
    """Peak RSS of a process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self._p = psutil.Process(pid)
        self.start = self.peak = int(self._p.memory_info().rss)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, int(self._p.memory_info().rss))

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._t.join()
        return self.start, self.peak


# ---------------------------------------------------------------------------- clients
class V2Client:
    """An asyncio v2 client on the shared sans-IO codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from chatcore.protocol import Connection, Role

        self.reader, self.writer = reader, writer
        self.conn = Connection(Role.CLIENT, version=2)
        self.next_id = 1

    @classmethod
    async def open(cls, port: int, user: str, password: str) -> V2Client:
        from chatcore.protocol import Authenticate, AuthResult, ClientHello, ServerHello

        reader, writer = await asyncio.open_connection(HOST, port)
        self = cls(reader, writer)
        self._send(ClientHello((2,), agent="bench/1"))
        hello = await self.next_event()
        if not isinstance(hello, ServerHello):
            raise RuntimeError(f"expected HELLO, got {hello!r}")
        self._send(Authenticate(user, password))
        result = await self.next_event()
        if not (isinstance(result, AuthResult) and result.ok):
            raise RuntimeError(f"login failed: {result!r}")
        return self

    def _send(self, event: Any) -> None:
        self.writer.write(self.conn.send(event))

    async def next_event(self) -> Any:
        from chatcore.protocol import NEED_DATA

        while True:
            event = self.conn.next_event()
            if out := self.conn.data_to_send():
                self.writer.write(out)
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(65536))

    async def chat(self, text: str, conversation: str = "") -> Sample:
        from chatcore.protocol import AnswerDelta, AnswerEnd, ConnectionClosed, Error

        mid = self.next_id
        self.next_id += 1
        t0 = time.perf_counter()
        from chatcore.protocol import ChatMessage

        self._send(ChatMessage(text, conversation=conversation, message_id=mid))
        first: float | None = None
        while True:
            event = await self.next_event()
            if isinstance(event, AnswerDelta) and first is None:
                first = time.perf_counter() - t0
            elif isinstance(event, AnswerEnd):
                return Sample(first, time.perf_counter() - t0, True)
            elif isinstance(event, Error):
                return Sample(first, time.perf_counter() - t0, False, event.code.value)
            elif isinstance(event, ConnectionClosed):
                return Sample(first, time.perf_counter() - t0, False, "closed")

    async def answer_pings(self) -> None:
        """Stay connected while idle, as a real client does: answer the server's
        keepalive PINGs (it closes a v2 client that leaves one unanswered)."""
        from chatcore.protocol import ConnectionClosed, Ping, Pong

        with contextlib.suppress(Exception):
            while True:
                event = await self.next_event()
                if isinstance(event, Ping):
                    self._send(Pong(event.nonce))
                elif isinstance(event, ConnectionClosed):
                    return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def v1_frame(text: str) -> bytes:
    body = text.encode()
    return str(len(body)).encode().ljust(HEADER) + body


class V1Client:
    """The original protocol, raw: 64-byte length header + body; bare login
    replies; 64-byte answer chunks ending with 64 spaces. No codec involved."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, user: str, password: str) -> V1Client:
        reader, writer = await asyncio.open_connection(HOST, port)
        self = cls(reader, writer)
        writer.write(v1_frame(user))
        if await reader.readexactly(len(V1_USERNAME_ACCEPTED)) != V1_USERNAME_ACCEPTED:
            raise RuntimeError("v1 username refused")
        writer.write(v1_frame(password))
        if await reader.readexactly(len(V1_PASSWORD_ACCEPTED)) != V1_PASSWORD_ACCEPTED:
            raise RuntimeError("v1 login failed")
        return self

    async def chat(self, text: str) -> Sample:
        t0 = time.perf_counter()
        self.writer.write(v1_frame(text))
        first: float | None = None
        error = ""
        while True:
            try:
                chunk = await self.reader.readexactly(HEADER)
            except asyncio.IncompleteReadError:
                return Sample(first, time.perf_counter() - t0, False, "closed")
            if chunk == V1_TERMINATOR:
                return Sample(first, time.perf_counter() - t0, not error, error)
            if first is None:
                first = time.perf_counter() - t0
                if chunk.startswith(b"[ERROR] "):
                    error = chunk[8:].split(b":", 1)[0].decode("ascii", "replace")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


CLIENTS: dict[str, Any] = {"v1": V1Client, "v2": V2Client}


def message_text(client: int, i: int) -> str:
    # No digit runs a phone detector could take for a number, no banned word.
    return f"bench client {client} message {i}: tell me something about the sea"


async def drive_server(proto: str, port: int, users: list[tuple[str, str]], messages: int,
                       *, login_concurrency: int = 50,
                       after_login: Callable[[], Any] | None = None) -> tuple[list[Sample], float]:
    """Log every client in (not timed), then all send ``messages`` messages each,
    one after the other, all clients at once. Returns samples and wall time."""
    cls = CLIENTS[proto]
    sem = asyncio.Semaphore(login_concurrency)

    async def login(u: str, p: str) -> Any:
        async with sem:
            return await cls.open(port, u, p)

    clients = await asyncio.gather(*(login(u, p) for u, p in users))
    if after_login is not None:
        after_login()
    samples: list[Sample] = []

    async def run(idx: int, client: Any) -> None:
        for i in range(messages):
            samples.append(await client.chat(message_text(idx, i)))

    t0 = time.perf_counter()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in clients))
    return samples, wall


async def drive_ceiling(url: str, clients: int, messages: int, system: str | None,
                        on_start: Callable[[], Any] | None = None,
                        ) -> tuple[list[Sample], float]:
    """The same work straight to the stand-in with ``ollama.AsyncClient``: each
    client keeps its conversation history, as chat-server does for it."""
    import ollama

    api = ollama.AsyncClient(host=url)

    async def run(idx: int) -> list[Sample]:
        out: list[Sample] = []
        history: list[dict[str, str]] = []
        for i in range(messages):
            text = message_text(idx, i)
            payload = ([{"role": "system", "content": system}] if system else []) + history + [
                {"role": "user", "content": text}]
            t0 = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            try:
                stream = await api.chat(model=MODEL, messages=payload, stream=True)
                async for part in stream:
                    content = part.message.content or ""
                    if content and first is None:
                        first = time.perf_counter() - t0
                    parts.append(content)
                out.append(Sample(first, time.perf_counter() - t0, True))
            except Exception as exc:
                out.append(Sample(first, time.perf_counter() - t0, False, type(exc).__name__))
            history += [{"role": "user", "content": text},
                        {"role": "assistant", "content": "".join(parts)}]
        return out

    async def warm() -> None:
        stream = await api.chat(model=MODEL, messages=[{"role": "user", "content": "warm"}],
                                stream=True)
        async for _ in stream:
            pass

    # Untimed: open the HTTP connections first, as the server's pool already
    # has them open when its clients start (else the ceiling's tail is TCP set-up).
    await asyncio.gather(*(warm() for _ in range(clients)))
    if on_start is not None:
        on_start()
    t0 = time.perf_counter()
    per_client = await asyncio.gather(*(run(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    await api._client.aclose()
    return [s for lst in per_client for s in lst], wall


# ---------------------------------------------------------------------------- cases
@dataclass
class Bench:
    args: argparse.Namespace
    root: Path
    results: list[Result] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def users(self, n: int, prefix: str = "user") -> dict[str, str]:
        return {f"{prefix}{i}": f"pw-{prefix}-{i}-bench" for i in range(n)}

    def server(self, name: str, standin: StandInProc, users: dict[str, str],
               **env: str) -> ServerProc:
        srv = ServerProc(self.root / name, standin.url, server_path=self.args.server_path, **env)
        srv.add_users(users)
        srv.start()
        return srv

    def check(self, name: str, target: str, measured: str, met: bool) -> None:
        self.checks.append({"check": name, "target": target, "measured": measured, "met": met})
        print(f"  [{'MET' if met else 'MISSED'}] {name}: {measured} (target: {target})", flush=True)

    def add(self, r: Result) -> Result:
        self.results.append(r)
        s = r.summary()
        print(f"  {r.case:<11} {r.target:<8} {r.clients:>4}x{r.messages:<4} "
              f"first p50 {s['first_p50_ms']:7.2f} ms p99 {s['first_p99_ms']:7.2f} ms | "
              f"answer p50 {s['total_p50_ms']:7.2f} ms p99 {s['total_p99_ms']:7.2f} ms | "
              f"{s['msgs_per_s']:7.1f} msg/s | errors {s['errors']}", flush=True)
        return r

    async def load(self, case: str, proto: str, srv: ServerProc | None, standin: StandInProc,
                   clients: int, messages: int, users: list[tuple[str, str]],
                   after_login: Callable[[], Any] | None = None) -> Result:
        # CPU seconds of each process over the timed part (after the logins):
        # the server, the load clients (this process: the v1/v2 clients, or the
        # ceiling's ollama client) and the stand-in. Less sensitive to the
        # machine's other load than msg/s: where the work goes, per message.
        cpu: dict[str, float] = {}
        pids = {"standin": standin.proc.pid, **({"server": srv.pid} if srv is not None else {})}

        def started() -> None:
            cpu.update({k: -cpu_seconds(pid) for k, pid in pids.items()}, clients=-cpu_seconds())
            if after_login is not None:
                after_login()

        def cpu_per_message(done: int) -> dict[str, float]:
            used = {k: v + cpu_seconds(pids.get(k)) for k, v in cpu.items()}
            return {f"cpu_ms_per_msg_{k}": 1000 * v / max(done, 1) for k, v in used.items()}

        if proto == "ceiling":
            samples, wall = await drive_ceiling(standin.url, clients, messages, self.system,
                                                on_start=started)
            extra = cpu_per_message(sum(s.ok for s in samples))
            return self.add(Result(case, "ceiling", clients, messages, wall, samples,
                                   extra=extra))
        assert srv is not None
        sampler = RssSampler(srv.pid)
        samples, wall = await drive_server(proto, srv.port, users[:clients], messages,
                                           after_login=started)
        extra = cpu_per_message(sum(s.ok for s in samples))
        start, peak = sampler.stop()
        return self.add(Result(case, proto, clients, messages, wall, samples, start, peak,
                               extra=extra))

    @property
    def system(self) -> str | None:
        from chat_server.config import DEFAULT_SYSTEM_PROMPT

        return DEFAULT_SYSTEM_PROMPT

    # -- throughput ---------------------------------------------------------------------
    async def case_throughput(self) -> None:
        """Rounds of (server, then the ceiling), per protocol, alternating; the
        figure is the median of the rounds' ratios (each round against the
        ceiling measured right after it, so drifting machine load cancels)."""
        a = self.args
        print(f"\n== throughput: {a.clients} clients x {a.messages} messages of {a.tokens} tokens, "
              f"{a.repeat} interleaved rounds", flush=True)
        standin = StandInProc(a.tokens, 0)
        users = self.users(a.clients)
        srv = self.server("throughput", standin, users, CHAT_MAX_PARALLEL=str(a.clients),
                          CHAT_RATE_LIMIT="0")
        try:
            pairs = list(users.items())
            await self.load("throughput", "v2", srv, standin, 1, 3, pairs)  # warm-up
            self.results.pop()
            rounds: dict[str, list[tuple[float, Result, Result]]] = {p: [] for p in a.protocols}
            for n in range(a.repeat):
                for proto in a.protocols:
                    # Profile the chat traffic only (not the logins), in the first round.
                    profiles: list[subprocess.Popen[bytes] | None] = []
                    hook = None
                    if a.profile and n == 0:
                        out = self.root / f"profile-{proto}.txt"

                        def hook(out: Path = out, started: list[Any] = profiles) -> None:
                            started.append(start_profile(srv.pid, out))
                    case = f"throughput-{proto}"
                    mine = await self.load(case, proto, srv, standin, a.clients, a.messages,
                                           pairs, after_login=hook)
                    for proc in profiles:
                        if proc is not None:
                            stop_profile(proc, self.root / f"profile-{proto}.txt")
                    ceiling = await self.load(case, "ceiling", None, standin, a.clients,
                                              a.messages, pairs)
                    ratio = mine.summary()["msgs_per_s"] / ceiling.summary()["msgs_per_s"]
                    m, c = mine.summary(), ceiling.summary()
                    print(f"  round {n + 1} {proto}: {ratio:.0%} of the ceiling; CPU ms per "
                          f"message: server {m['cpu_ms_per_msg_server']:.2f} (its clients "
                          f"{m['cpu_ms_per_msg_clients']:.2f}, stand-in "
                          f"{m['cpu_ms_per_msg_standin']:.2f}) | ceiling's client "
                          f"{c['cpu_ms_per_msg_clients']:.2f} (stand-in "
                          f"{c['cpu_ms_per_msg_standin']:.2f})", flush=True)
                    rounds[proto].append((ratio, mine, ceiling))
            # The report keeps the median round per protocol (server and its ceiling).
            self.results = [r for r in self.results if not r.case.startswith("throughput")]
            for proto, got in rounds.items():
                ratios = [r for r, _, _ in got]
                median = statistics.median(ratios)
                _, mine, ceiling = sorted(got, key=lambda t: t[0])[len(got) // 2]
                errors = sum(m.summary()["errors"] for _, m, _ in got)
                mine.extra.update(ratio_to_ceiling=median, round_ratios=ratios)
                self.results += [mine, ceiling]
                self.check(f"throughput {proto} {a.clients}x{a.messages}",
                           f">= {a.throughput_target:.0%} of the ceiling (median of {len(got)} "
                           "interleaved rounds), 0 errors",
                           f"median {median:.0%} (rounds: {', '.join(f'{r:.0%}' for r in ratios)}), "
                           f"{errors} errors", median >= a.throughput_target and errors == 0)
            self.check("no traceback in the server log", "0", str(srv.tracebacks()),
                       srv.tracebacks() == 0)
        finally:
            srv.stop()
            standin.stop()

    # -- first byte ------------------------------------------------------------------
    async def case_first_byte(self) -> None:
        a = self.args
        n = a.first_byte_messages
        print(f"\n== first byte: 1 v2 client x {n} messages of {a.tokens} tokens", flush=True)
        standin = StandInProc(a.tokens, 0)
        users = self.users(1)
        srv = self.server("first-byte", standin, users, CHAT_RATE_LIMIT="0")
        try:
            pairs = list(users.items())
            await self.load("first-byte", "v2", srv, standin, 1, 5, pairs)  # warm-up
            self.results.pop()
            ceil = await self.load("first-byte", "ceiling", None, standin, 1, n, pairs)
            mine = await self.load("first-byte", "v2", srv, standin, 1, n, pairs)
            gap = mine.summary()["first_p50_ms"] - ceil.summary()["first_p50_ms"]
            mine.extra["first_p50_gap_ms"] = gap
            self.check("first byte v2, 1 client", "p50 within 2 ms of the ceiling",
                       f"+{gap:.2f} ms ({mine.summary()['first_p50_ms']:.2f} vs "
                       f"{ceil.summary()['first_p50_ms']:.2f} ms)", gap <= 2.0)
        finally:
            srv.stop()
            standin.stop()

    # -- sweep -------------------------------------------------------------------------
    async def case_sweep(self) -> None:
        a = self.args
        counts = a.sweep
        print(f"\n== sweep: {counts} clients x {a.sweep_messages} messages", flush=True)
        standin = StandInProc(a.tokens, 0)
        users = self.users(max(counts))
        srv = self.server("sweep", standin, users, CHAT_MAX_PARALLEL=str(max(counts)),
                          CHAT_RATE_LIMIT="0")
        try:
            pairs = list(users.items())
            await self.load("sweep", "v2", srv, standin, 1, 3, pairs)  # warm-up
            self.results.pop()
            for n in counts:
                for target in ("ceiling", "v2"):
                    await self.load("sweep", target, srv if target == "v2" else None, standin,
                                    n, a.sweep_messages, pairs)
        finally:
            srv.stop()
            standin.stop()

    # -- idle --------------------------------------------------------------------------
    async def case_idle(self) -> None:
        for mode in self.args.idle_modes:
            await self.idle(mode)

    async def idle(self, mode: str) -> None:
        """``mode``: "native" (the console script from this virtualenv, no allocator
        variables) or "image" (the server image, built from Dockerfile.server)."""
        a = self.args
        k = a.idle_connections
        print(f"\n== idle ({mode}): {k} authenticated connections ({a.idle_argon2} argon2)",
              flush=True)
        raise_fd_limit(2 * k + 1000)
        standin = StandInProc(a.tokens, 0)
        users = self.users(50, "idle")
        env = {"CHAT_MAX_CONNECTIONS": str(k + 1000), "CHAT_RATE_LIMIT": "0",
               # Logins queue for the server's two hashing slots; none may time out.
               "CHAT_AUTH_TIMEOUT": "120",
               # 10,000 production-cost logins can take longer than the idle
               # timeout (15 min) on a busy machine: the first connections would
               # be closed before the last one is open (seen: 4,029 of 10,000 left).
               "CHAT_IDLE_TIMEOUT": "86400",
               **(CHEAP_ARGON2 if a.idle_argon2 == "cheap" else {})}
        srv: ServerProc
        if mode == "image":
            srv = ImageServerProc(self.root / "idle-image", standin.url,
                                  build_image(a.base_image), **env)
            srv.add_users(users)
            srv.start()
        else:
            srv = self.server(f"idle-{mode}", standin, users, **env)
        pairs = list(users.items())
        conns: list[V2Client] = []
        try:
            # Warm the server (imports, first turn, first login) before the baseline.
            # The last warm-up answer is long: after it the server gives its free
            # heap pages back (chat_server.memory.give_back), so the baseline does
            # not hold start-up leftovers the connections would then fill unseen.
            warm = await V2Client.open(srv.port, *pairs[0])
            await warm.chat("warm up")
            await warm.chat("warm up, long [standin:tokens=100000]")
            await warm.close()
            await asyncio.sleep(1.5)
            before = srv.rss()
            # Production-cost logins are CPU-bound on the server's two hashing
            # slots: a few at a time keeps each well inside the login deadline.
            sem = asyncio.Semaphore(100 if a.idle_argon2 == "cheap" else 8)
            t0 = time.perf_counter()

            keepalive: list[asyncio.Task[None]] = []

            async def one(i: int) -> V2Client:
                async with sem:
                    client = await V2Client.open(srv.port, *pairs[i % len(pairs)])
                keepalive.append(asyncio.create_task(client.answer_pings()))
                return client

            # In two halves: the second half's growth is the marginal cost of a
            # connection, immune to free heap space the baseline happened to hold
            # (which the first connections fill without growing the process).
            half = k // 2
            conns = list(await asyncio.gather(*(one(i) for i in range(half))))
            await asyncio.sleep(1.0)
            middle = srv.rss()
            conns += await asyncio.gather(*(one(i) for i in range(half, k)))
            login_s = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            after = srv.rss()
            average = (after - before) / k
            marginal = (after - middle) / (k - half)
            per_conn = max(average, marginal)
            # Every one still open (the figure is per connection held).
            alive = sum(not t.done() for t in keepalive)
            # A newcomer while all of them stay connected.
            t1 = time.perf_counter()
            newcomer = await V2Client.open(srv.port, *pairs[1])
            connect_s = time.perf_counter() - t1
            sample = await newcomer.chat("am I still served?")
            await newcomer.close()
            first_total = connect_s + (sample.first or float("inf"))
            r = Result("idle", mode, k, 0, login_s, [sample], before, after, {
                "rss_per_connection_kib": per_conn / 1024,
                "rss_average_kib": average / 1024, "rss_marginal_kib": marginal / 1024,
                "rss_middle_mib": middle / 2**20, "login_all_s": login_s, "still_open": alive,
                "newcomer_login_s": connect_s, "newcomer_first_chunk_s": sample.first,
                "newcomer_login_plus_first_s": first_total,
            })
            self.results.append(r)
            print(f"  {k} logins in {login_s:.1f} s; RSS {before / 2**20:.1f} -> "
                  f"{middle / 2**20:.1f} ({half}) -> {after / 2**20:.1f} MiB", flush=True)
            self.check(f"idle connections still open ({mode})", str(k), str(alive), alive == k)
            self.check(f"RSS per idle connection ({k}, {mode})",
                       "<= 8 KiB (the larger of: average from the baseline, marginal over "
                       "the second half)",
                       f"{per_conn / 1024:.1f} KiB (average {average / 1024:.1f}, marginal "
                       f"{marginal / 1024:.1f})", per_conn <= 8 * 1024)
            self.check(f"newcomer first answer chunk ({mode})", "within 1 s",
                       f"{(sample.first or float('nan')) * 1000:.1f} ms after sending "
                       f"({first_total * 1000:.0f} ms including connect and login)",
                       sample.ok and (sample.first or 9) < 1.0)
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
            srv.stop()
            standin.stop()

    # -- a client that never reads ----------------------------------------------------
    async def case_never_reads(self) -> None:
        a = self.args
        tokens = a.never_reads_tokens
        print(f"\n== never reads: one client asks for {tokens} tokens at full speed and reads "
              "nothing", flush=True)
        standin = StandInProc(a.tokens, 0)
        users = self.users(1, "stuck")
        srv = self.server("never-reads", standin, users, CHAT_RATE_LIMIT="0",
                          CHAT_MAX_PARALLEL="1")
        (user, password), = users.items()
        try:
            warm = await V2Client.open(srv.port, user, password)
            for i in range(3):
                await warm.chat(f"warm up {i}")
            await warm.close()
            await asyncio.sleep(1.0)
            before = srv.rss()
            import socket

            from chatcore.protocol import ChatMessage

            # A small receive buffer, as a client that stopped reading long ago
            # would have left: the kernel soaks up little on this side.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (HOST, srv.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            stuck = V2Client(reader, writer)
            from chatcore.protocol import Authenticate, ClientHello

            stuck._send(ClientHello((2,), agent="bench-stuck/1"))
            await stuck.next_event()
            stuck._send(Authenticate(user, password))
            await stuck.next_event()
            marker = f"never-reads-{os.getpid()}"
            t0 = time.perf_counter()
            stuck._send(ChatMessage(f"{marker} [standin:tokens={tokens}]", message_id=1))
            sampler = RssSampler(srv.pid)
            rx = re.compile(r"turn finished: interrupted .*total_ms=(\d+)(?: buffered_peak=(\d+))?")
            m = None
            while m is None and time.perf_counter() - t0 < 120:
                await asyncio.sleep(0.25)
                m = rx.search(srv.log_path.read_text("utf-8", "replace"))
            _, peak = sampler.stop()
            writer.close()
            await asyncio.sleep(1.0)
            after = srv.rss()
            with _OPENER.open(standin.url + "/_standin/requests", timeout=5) as resp:
                recs = [r for r in json.loads(resp.read()) if marker in json.dumps(r["body"])]
            sent = recs[-1]["tokens_sent"] if recs else -1
            if m is None:
                self.check("never reads: the turn ends", "within 120 s", "it did not", False)
                return
            # (a server from before the bound does not report it: -1)
            held_s, buffered = int(m.group(1)) / 1000, int(m.group(2) or -1)
            grew = (peak - before) / 2**20
            self.results.append(Result("never-reads", "v2", 1, 1, held_s, [], before, peak, {
                "buffered_peak_chars": buffered, "slot_held_s": held_s,
                "tokens_asked": tokens, "tokens_generated": sent,
                "rss_growth_mib": grew, "rss_after_mib": after / 2**20,
            }))
            print(f"  model stopped after {sent} of {tokens} tokens; slot held {held_s:.1f} s; "
                  f"at most {buffered} characters waited in the server; RSS "
                  f"{before / 2**20:.1f} -> peak {peak / 2**20:.1f} -> {after / 2**20:.1f} MiB "
                  "after", flush=True)
            self.check("never reads: server RSS growth", "bounded (<= 16 MiB)",
                       f"{grew:.1f} MiB (buffer peak {buffered} chars)", grew <= 16)
        finally:
            srv.stop()
            standin.stop()

    # -- fairness ----------------------------------------------------------------------
    async def case_fairness(self) -> None:
        a = self.args
        print("\n== fairness: CHAT_MAX_PARALLEL=2, 1 user x 50 back to back + 10 users x 1",
              flush=True)
        standin = StandInProc(a.tokens, a.fairness_delay_ms)
        others = self.users(10, "other")
        srv = self.server("fairness", standin, {"burst": "pw-burst-bench", **others},
                          CHAT_MAX_PARALLEL="2", CHAT_RATE_LIMIT="0")
        try:
            burst = await V2Client.open(srv.port, "burst", "pw-burst-bench")
            clients = [await V2Client.open(srv.port, u, p) for u, p in others.items()]
            done: list[tuple[str, float]] = []
            t0 = time.perf_counter()
            started = asyncio.Event()

            async def burster() -> None:
                for i in range(50):
                    task = asyncio.create_task(burst.chat(f"burst {i}"))
                    if i == 0:
                        # The others send once the burster's first answer holds a slot.
                        while not task.done() and await asyncio.to_thread(standin_requests, standin) < 1:
                            await asyncio.sleep(0.005)
                        started.set()
                    s = await task
                    done.append(("burst" if s.ok else "burst-error", time.perf_counter() - t0))

            async def other(i: int, c: V2Client) -> None:
                await started.wait()
                s = await c.chat(f"other {i} here")
                done.append((f"other{i}" if s.ok else f"other{i}-error", time.perf_counter() - t0))

            await asyncio.gather(burster(), *(other(i, c) for i, c in enumerate(clients)))
            for c in [burst, *clients]:
                await c.close()
            order = [name for name, _ in done]
            bursts = [i for i, n in enumerate(order) if n == "burst"]
            other_idx = [i for i, n in enumerate(order) if n.startswith("other") and "error" not in n]
            fifth = bursts[4] if len(bursts) >= 5 else None
            met = len(other_idx) == 10 and fifth is not None and max(other_idx) < fifth
            other_times = [t for n, t in done if n.startswith("other")]
            self.results.append(Result("fairness", "v2", 11, 50, done[-1][1] if done else 0, [],
                                       extra={"order": order,
                                              "others_last_done_s": max(other_times),
                                              "burst_5th_done_s": done[fifth][1] if fifth is not None else None}))
            self.check("fairness", "all 10 others answered before the burster's 5th",
                       f"burster's 5th answer was #{(fifth or 0) + 1} overall; last other was "
                       f"#{max(other_idx) + 1 if other_idx else 'none'}", met)
        finally:
            srv.stop()
            standin.stop()


def standin_requests(standin: StandInProc) -> int:
    with _OPENER.open(standin.url + "/_standin/requests", timeout=5) as resp:
        return len(json.loads(resp.read()))


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < want:
        print(f"  warning: RLIMIT_NOFILE hard limit {hard} < {want}", flush=True)


# ---------------------------------------------------------------------------- profiling
def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("  (py-spy not installed: no profile)", flush=True)
        return None
    # --gil: only samples holding the GIL, i.e. where the server spends CPU,
    # not threads parked in a queue or the event loop waiting in epoll.
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                             "--gil", "--output", str(out.with_suffix(".raw"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(proc: subprocess.Popen[bytes], out: Path) -> None:
    proc.send_signal(2)  # py-spy writes its output on SIGINT
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    raw = out.with_suffix(".raw")
    if not raw.exists():
        print("  (py-spy wrote nothing)", flush=True)
        return
    summary = summarize_collapsed(raw.read_text())
    out.write_text(summary)
    keep = REPO / "bench" / "results" / out.name
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, keep)
    shutil.copy(raw, keep.with_suffix(".raw"))  # the stacks, for a closer look
    print(f"  profile of the server (py-spy, collapsed stacks in {raw}):\n{summary}", flush=True)


def summarize_collapsed(text: str, top: int = 25) -> str:
    """Self and inclusive sample share per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "(no samples)\n"
    lines = [f"{total} samples; top self time:"]
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / total:6.1%}  {f}")
    lines.append("top inclusive time (chat_server / chatcore frames):")
    ours = [(f, n) for f, n in incl.items() if "chat_server" in f or "chatcore" in f]
    for f, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / total:6.1%}  {f}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform()}


def markdown(results: list[Result], checks: list[dict[str, Any]]) -> str:
    lines = ["| case | target | clients x msgs | first byte p50 / p99 (ms) | answer p50 / p99 (ms) "
             "| msg/s | vs ceiling | errors | server RSS start / peak (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ceilings = {(r.case, r.clients): r.summary()["msgs_per_s"] for r in results
                if r.target == "ceiling"}
    for r in results:
        if r.case in ("idle", "fairness", "never-reads"):
            continue
        s = r.summary()
        c = ceilings.get((r.case, r.clients))
        ratio = "1.00" if r.target == "ceiling" else (f"{s['msgs_per_s'] / c:.2f}" if c else "")
        rss = ("" if s["rss_start_mib"] is None
               else f"{s['rss_start_mib']:.0f} / {s['rss_peak_mib']:.0f}")
        lines.append(
            f"| {r.case} | {r.target} | {r.clients} x {r.messages} | "
            f"{s['first_p50_ms']:.2f} / {s['first_p99_ms']:.2f} | "
            f"{s['total_p50_ms']:.2f} / {s['total_p99_ms']:.2f} | {s['msgs_per_s']:.0f} | "
            f"{ratio} | {s['errors']} | {rss} |")
    lines += ["", "| check | target | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['check']} | {c['target']} | {c['measured']} | {'yes' if c['met'] else 'NO'} |"
              for c in checks]
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in results if r.case == "sweep"]
    if not sweep:
        print("  (no sweep results: no plot)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"v2": ("chat-server (v2)", "tab:blue"), "ceiling": ("ceiling: ollama client direct", "tab:gray")}
    for target, (label, color) in styles.items():
        rs = sorted((r for r in sweep if r.target == target), key=lambda r: r.clients)
        if not rs:
            continue
        xs = [r.clients for r in rs]
        ss = [r.summary() for r in rs]
        ax1.plot(xs, [s["total_p50_ms"] for s in ss], "o-", color=color, label=f"{label} p50")
        ax1.plot(xs, [s["total_p99_ms"] for s in ss], "o--", color=color, alpha=0.6,
                 label=f"{label} p99")
        ax2.plot(xs, [s["first_p50_ms"] for s in ss], "o-", color=color, label=f"{label} p50")
        ax2.plot(xs, [s["first_p99_ms"] for s in ss], "o--", color=color, alpha=0.6,
                 label=f"{label} p99")
    for ax, title in ((ax1, "whole answer"), (ax2, "first answer byte")):
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    tokens = sweep[0].extra.get("tokens", "")
    fig.suptitle(f"chat-server vs direct ollama client, stand-in model, {tokens} tokens/answer".replace(" ,", ","))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"  plot written to {path}")


# ---------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def ints(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x]

    p.add_argument("--cases", default="throughput,first-byte,idle,fairness,sweep,never-reads",
                   help="comma-separated cases to run (default: all)")
    p.add_argument("--clients", type=int, default=50, help="throughput: concurrent clients")
    p.add_argument("--messages", type=int, default=20, help="throughput: messages per client")
    p.add_argument("--tokens", type=int, default=20, help="tokens per answer (stand-in)")
    p.add_argument("--protocols", default="v1,v2", help="throughput: protocols to drive")
    p.add_argument("--repeat", type=int, default=3,
                   help="throughput: interleaved rounds (server, then the ceiling); the "
                        "median ratio is reported")
    p.add_argument("--throughput-target", type=float, default=0.70,
                   help="throughput: the median ratio to the ceiling to reach")
    p.add_argument("--first-byte-messages", type=int, default=300)
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--idle-modes", default="native",
                   help="idle: how to run the server: native (the console script) and/or "
                        "image (the server image, built on --base-image; needs Docker)")
    p.add_argument("--idle-argon2", choices=("production", "cheap"), default="production",
                   help="idle: the logins' password hashing: the production cost (19 MiB, "
                        "what leaves memory behind without the allocation policy; minutes "
                        "for 10,000 logins) or a cheap one (seconds)")
    p.add_argument("--base-image", default=BASE_IMAGE,
                   help="base image of the server image for --idle-modes image")
    p.add_argument("--fairness-delay-ms", type=float, default=5.0,
                   help="fairness: stand-in delay per token, so answers overlap")
    p.add_argument("--never-reads-tokens", type=int, default=2_000_000,
                   help="never-reads: tokens the stuck client asks for")
    p.add_argument("--sweep", type=ints, default=[1, 10, 25, 50], help="sweep: client counts")
    p.add_argument("--sweep-messages", type=int, default=10)
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "latest.json")
    p.add_argument("--plot", type=Path, default=None,
                   help="write the latency plot here (e.g. docs/bench-latency.png)")
    p.add_argument("--profile", action="store_true",
                   help="record the server with py-spy during the v2 throughput run")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument("--server-path", type=Path, default=None,
                   help="run the server (and its CLI) of this other checkout, e.g. a git "
                        "worktree of an older commit, for before/after figures")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    a.cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    a.protocols = [x.strip() for x in a.protocols.split(",") if x.strip()]
    a.idle_modes = [x.strip() for x in a.idle_modes.split(",") if x.strip()]
    if set(a.idle_modes) - {"native", "image"}:
        p.error("--idle-modes: native and/or image")
    unknown = set(a.cases) - {"throughput", "first-byte", "idle", "fairness", "sweep",
                              "never-reads"}
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    return a


async def amain(a: argparse.Namespace, root: Path) -> Bench:
    bench = Bench(a, root)
    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "throughput": bench.case_throughput, "first-byte": bench.case_first_byte,
        "idle": bench.case_idle, "fairness": bench.case_fairness, "sweep": bench.case_sweep,
        "never-reads": bench.case_never_reads,
    }
    for name in a.cases:
        await cases[name]()
    for r in bench.results:
        r.extra.setdefault("tokens", a.tokens)
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    try:
        bench = asyncio.run(amain(a, root))
    finally:
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = markdown(bench.results, bench.checks)
    print("\n" + table)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [r.summary() for r in bench.results],
        "checks": bench.checks,
        "medians_note": "percentiles are nearest-rank over every message of the run",
    }, indent=2, default=str))
    print(f"results written to {a.json}")
    if a.plot is not None:
        plot(bench.results, a.plot)
    missed = [c["check"] for c in bench.checks if not c["met"]]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 1 if missed and a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
