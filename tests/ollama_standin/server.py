"""The Ollama API stand-in: routes, model registry, streaming answers and faults.

It also serves the OpenAI-compatible endpoints (``/v1/models``,
``/v1/chat/completions``, ``/health``; see openai_compat.py) from the same
model registry and with the same directives and faults, so one process can
stand in for an Ollama and for an OpenAI-compatible server such as llama.cpp's.

It mimics ollama v0.12.6+ byte for byte where clients can tell the difference
(docs/MODEL-APIS.md): NDJSON streams sent chunked, Go struct key order, ``{"models":[]}``
never ``null``, errors before any byte as real HTTP statuses, errors after the
first byte as a final ``{"error":...}`` line with no ``done`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import openai_compat as oai
from ._http import BadRequest, HttpConnection, Request
from .answers import (
    BUSY_ERROR,
    MID_STREAM_ERROR,
    RUNNER_ERROR,
    DirectiveError,
    Plan,
    count_words,
    dumps,
    make_plan,
    parse_fault,
    rfc3339nano,
)

JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
TEXT = "text/plain; charset=utf-8"

MODEL_SIZE = 2019393189
LOAD_DURATION_NS = 1_334_875
PROMPT_NS_PER_TOKEN = 12_500
#: Faults that strike after this many tokens (and ``stall``, ``trickle`` after one).
FAULT_AFTER_TOKENS = 2
#: Seconds between two bytes of a ``trickle``.
TRICKLE_INTERVAL = 0.1
#: Seconds between two pull progress lines, like ollama's download loop.
PULL_TICK = 0.06
MAX_LOGGED_REQUESTS = 10_000


@dataclass
class Config:
    """Command-line settings; ``/_standin/control`` changes a live copy of them."""

    host: str = "127.0.0.1"
    port: int = 11434
    models: tuple[str, ...] = ("llama3.2",)
    tokens: int = 20
    delay_ms: float = 0.0
    pull_seconds: float = 1.0
    version: str = "0.12.6"
    refuse_pull: bool = False
    fault: str | None = None
    fault_count: int = -1
    #: Seconds the model listings (/api/tags, /v1/models) take to send their body,
    #: one byte every TRICKLE_INTERVAL (0: at once).
    listing_trickle: float = 0.0
    api_key: str | None = None  # required as a bearer token on /v1/* when set


class ClientGone(Exception):
    """The client closed the connection before the response ended."""


def normalize(name: str) -> str:
    """``llama3.2`` and ``LLaMA3.2:latest`` name the same model, as in ollama."""
    name = name.strip().lower()
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def _digest(name: str, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}{normalize(name)}".encode()).hexdigest()


def _details(name: str) -> dict[str, Any]:
    family = "qwen2" if "qwen" in name else "gemma3" if "gemma" in name else "llama"
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}


@dataclass
class RequestRecord:
    """One received chat/generate request, as ``GET /_standin/requests`` reports it."""

    id: int
    path: str
    body: Any
    started: float
    finished: float | None = None
    status: int | None = None
    fault: str | None = None
    tokens_sent: int = 0
    aborted_by_client: bool = False
    #: Which TCP connection carried it (1 for the first accepted, ...): shows
    #: whether a client reuses its connections.
    connection: int = 0


@dataclass
class _State:
    config: Config
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded: dict[str, float] = field(default_factory=dict)  # name -> expires (epoch)
    requests: deque[RequestRecord] = field(
        default_factory=lambda: deque(maxlen=MAX_LOGGED_REQUESTS))
    next_id: int = 1


class StandIn:
    """All routes; one instance per listening socket."""

    def __init__(self, config: Config) -> None:
        self.initial = config
        self.state = self._fresh_state()
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[HttpConnection] = set()
        self._accepted = 0
        self.routes: dict[str, dict[str, Callable[[HttpConnection, Request], Awaitable[None]]]] = {
            "/": {"GET": self.root, "HEAD": self.root},
            "/api/version": {"GET": self.version, "HEAD": self.version},
            "/api/tags": {"GET": self.tags, "HEAD": self.tags},
            "/api/ps": {"GET": self.ps},
            "/api/show": {"POST": self.show},
            "/api/pull": {"POST": self.pull},
            "/api/delete": {"DELETE": self.delete},
            "/api/chat": {"POST": self.chat},
            "/api/generate": {"POST": self.generate},
            "/v1/models": {"GET": self.v1_models},
            "/v1/chat/completions": {"POST": self.v1_chat},
            "/health": {"GET": self.health},
            "/_standin/control": {"GET": self.control, "POST": self.control},
            "/_standin/requests": {"GET": self.requests},
            "/_standin/reset": {"POST": self.reset},
        }

    def _fresh_state(self) -> _State:
        state = _State(replace(self.initial))
        for m in self.initial.models:
            self._add_model(state, m)
        return state

    @staticmethod
    def _add_model(state: _State, name: str) -> None:
        key = normalize(name)
        state.models.setdefault(key, {
            "name": key, "model": key, "modified_at": rfc3339nano(), "size": MODEL_SIZE,
            "digest": _digest(name), "details": _details(key),
        })

    # -- connection loop -----------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = HttpConnection(reader, writer)
        self._accepted += 1
        conn.number = self._accepted
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(conn)
        try:
            while True:
                try:
                    req = await conn.read_request()
                except BadRequest:
                    await conn.send(400, TEXT, b"400 Bad Request", close=True)
                    break
                if req is None:
                    break
                await self.dispatch(conn, req)
                if conn.closing or not req.keep_alive:
                    break
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug in the stand-in: say so loudly, keep serving others
            traceback.print_exc(file=sys.stderr)
        finally:
            conn.close()
            self._conns.discard(conn)
            if task is not None:
                self._tasks.discard(task)

    async def dispatch(self, conn: HttpConnection, req: Request) -> None:
        methods = self.routes.get(req.path)
        if methods is None:
            await conn.send(404, TEXT, b"404 page not found", head_only=req.method == "HEAD")
            return
        handler = methods.get(req.method)
        if handler is None:
            await conn.send(405, TEXT, b"405 method not allowed")
            return
        try:
            await handler(conn, req)
        except (ClientGone, ConnectionError, OSError):
            conn.abort()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            if not conn.closing:
                with contextlib.suppress(Exception):
                    await self.error(conn, 500, "stand-in internal error")
            conn.abort()

    def shutdown(self) -> None:
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    async def json(conn: HttpConnection, status: int, obj: Any, req: Request | None = None) -> None:
        """``c.JSON``: charset=utf-8 and no trailing newline."""
        await conn.send(status, JSON, dumps(obj), head_only=req is not None and req.method == "HEAD")

    async def listing(self, conn: HttpConnection, obj: Any, req: Request) -> None:
        """A model listing; with ``listing_trickle`` its body comes a byte at a time."""
        seconds = self.state.config.listing_trickle
        if seconds <= 0 or req.method == "HEAD":
            return await self.json(conn, 200, obj, req)
        body = dumps(obj)
        await conn.write(conn.head(200, [("Content-Type", JSON),
                                         ("Content-Length", str(len(body)))]))
        deadline = time.monotonic() + seconds
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < len(body) - 1 and time.monotonic() < deadline:
                await asyncio.sleep(TRICKLE_INTERVAL)
                await conn.write(body[sent:sent + 1])
                sent += 1
            await conn.write(body[sent:])

    async def error(self, conn: HttpConnection, status: int, message: str) -> None:
        await self.json(conn, status, {"error": message})

    @staticmethod
    def body(req: Request) -> dict[str, Any] | str:
        """The JSON object in the request body, or Go's error text for a bad one."""
        if not req.body.strip():
            return "missing request body"
        try:
            obj = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"invalid character in request body: {exc}"
        if not isinstance(obj, dict):
            return f"json: cannot unmarshal {type(obj).__name__} into Go value"
        return obj

    def find(self, name: str) -> dict[str, Any] | None:
        return self.state.models.get(normalize(name)) if name.strip() else None

    @staticmethod
    async def pause(watch: asyncio.Task[None], seconds: float) -> None:
        """Sleep, but notice at once when the client hangs up."""
        if seconds > 0:
            await asyncio.wait({watch}, timeout=seconds)
        else:
            await asyncio.sleep(0)  # let other streams run between tokens
        if watch.done():
            raise ClientGone

    @classmethod
    async def trickle(cls, conn: HttpConnection, watch: asyncio.Task[None], seconds: float,
                      filler: bytes) -> None:
        """For ``seconds``, ``filler`` every 0.1 s: bytes keep coming (no read
        timeout of the client fires), but nothing the client can use."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await cls.pause(watch, TRICKLE_INTERVAL)
            await conn.send_chunk(filler)

    @contextlib.asynccontextmanager
    async def watching(self, conn: HttpConnection) -> AsyncIterator[asyncio.Task[None]]:
        watch = asyncio.create_task(conn.wait_peer_gone())
        try:
            yield watch
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await watch

    # -- simple endpoints ------------------------------------------------------------
    async def root(self, conn: HttpConnection, req: Request) -> None:
        await conn.send(200, TEXT, b"Ollama is running", head_only=req.method == "HEAD")

    async def version(self, conn: HttpConnection, req: Request) -> None:
        await self.json(conn, 200, {"version": self.state.config.version}, req)

    async def tags(self, conn: HttpConnection, req: Request) -> None:
        models = sorted(self.state.models.values(), key=lambda m: m["modified_at"], reverse=True)
        await self.listing(conn, {"models": models}, req)

    async def ps(self, conn: HttpConnection, req: Request) -> None:
        now = time.time()
        out = []
        for name, expires in sorted(self.state.loaded.items()):
            m = self.state.models.get(name)
            if m is None or expires < now:
                continue
            out.append({"name": name, "model": name, "size": m["size"], "digest": m["digest"],
                        "details": m["details"], "expires_at": rfc3339nano(expires),
                        "size_vram": 0, "context_length": 4096})
        await self.json(conn, 200, {"models": out})

    async def show(self, conn: HttpConnection, req: Request) -> None:
        body = self.body(req)
        if isinstance(body, str):
            return await self.error(conn, 400, body)
        name = body.get("model") or body.get("name") or ""
        if not name:
            return await self.error(conn, 400, "model is required")
        m = self.find(name)
        if m is None:
            return await self.error(conn, 404, f"model '{name}' not found")
        await self.json(conn, 200, {
            "license": "stand-in license",
            "modelfile": f"# Modelfile generated by the Ollama stand-in\nFROM {m['name']}\n",
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": m["details"],
            "model_info": {"general.architecture": m["details"]["family"],
                           "general.parameter_count": 3212749888,
                           "llama.context_length": 131072},
            "capabilities": ["completion"],
            "modified_at": m["modified_at"],
        })

    async def delete(self, conn: HttpConnection, req: Request) -> None:
        body = self.body(req)
        if isinstance(body, str):
            return await self.error(conn, 400, body)
        name = body.get("model") or body.get("name") or ""
        if self.state.models.pop(normalize(name), None) is None:
            return await self.error(conn, 404, f"model '{name}' not found")
        self.state.loaded.pop(normalize(name), None)
        await conn.send(200, JSON, b"")

    # -- pull ----------------------------------------------------------------------
    def pull_lines(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        """(delay before, line) pairs of a pull's progress, as ollama's PullModel writes them."""
        cfg = self.state.config
        lines: list[tuple[float, dict[str, Any]]] = [(0.0, {"status": "pulling manifest"})]
        if cfg.refuse_pull:
            return [*lines, (0.0, {"error": "pull model manifest: file does not exist"})]
        digest = _digest(name)
        steps = max(1, round(cfg.pull_seconds / PULL_TICK))
        tick = max(cfg.pull_seconds, 0.0) / steps
        status = f"pulling {digest[:12]}"
        lines.append((0.0, {"status": status, "digest": f"sha256:{digest}", "total": MODEL_SIZE}))
        for k in range(1, steps + 1):
            lines.append((tick, {"status": status, "digest": f"sha256:{digest}",
                                 "total": MODEL_SIZE, "completed": MODEL_SIZE * k // steps}))
        for i, size in enumerate((1429, 7711, 6016, 96, 561)):  # template, license, ... config
            d = _digest(name, salt=str(i))
            lines.append((0.0, {"status": f"pulling {d[:12]}", "digest": f"sha256:{d}",
                                "total": size, "completed": size}))
        lines += [(0.0, {"status": "verifying sha256 digest"}), (0.0, {"status": "writing manifest"}),
                  (0.0, {"status": "success"})]
        return lines

    async def pull(self, conn: HttpConnection, req: Request) -> None:
        body = self.body(req)
        if isinstance(body, str):
            return await self.error(conn, 400, body)
        name = str(body.get("model") or body.get("name") or "")
        if not name.strip() or any(c.isspace() for c in name.strip()):
            return await self.error(conn, 400, "invalid model name")
        stream = body.get("stream", True) is not False
        async with self.watching(conn) as watch:
            if stream:
                await conn.start_chunked(200, NDJSON)
            last: dict[str, Any] = {}
            for delay, line in self.pull_lines(name):
                await self.pause(watch, delay)
                if line.get("status") == "success":
                    self._add_model(self.state, name)
                last = line
                if stream:
                    await conn.send_chunk(dumps(line) + b"\n")
                    if "error" in line:
                        break
            if stream:
                await conn.end_chunked()
            elif "error" in last:
                await self.error(conn, 500, last["error"])
            else:
                await self.json(conn, 200, last)

    # -- chat / generate -------------------------------------------------------------
    async def chat(self, conn: HttpConnection, req: Request) -> None:
        await self.answer(conn, req, "chat")

    async def generate(self, conn: HttpConnection, req: Request) -> None:
        await self.answer(conn, req, "generate")

    def record(self, conn: HttpConnection, req: Request, body: Any) -> RequestRecord:
        rec = RequestRecord(self.state.next_id, req.path, body, time.time(),
                            connection=conn.number)
        self.state.next_id += 1
        self.state.requests.append(rec)
        return rec

    async def answer(self, conn: HttpConnection, req: Request, kind: str) -> None:
        body = self.body(req)
        if isinstance(body, str):
            return await self.error(conn, 400, body)
        rec = self.record(conn, req, body)
        try:
            rec.status = await self._answer(conn, body, kind, rec)
        except (ClientGone, ConnectionError, OSError):
            rec.aborted_by_client = True
            raise
        finally:
            rec.finished = time.time()

    async def _answer(self, conn: HttpConnection, body: dict[str, Any], kind: str,
                      rec: RequestRecord) -> int:
        """Answer one request; returns the HTTP status sent (0: connection dropped)."""
        cfg = self.state.config
        model = str(body.get("model") or "")
        if kind == "chat" and not model:
            await self.error(conn, 400, "model is required")
            return 400
        m = self.find(model)
        if m is None:
            await self.error(conn, 404, f"model '{model}' not found")
            return 404
        think = body.get("think")
        if isinstance(think, str) and think not in ("low", "medium", "high", "max"):
            await self.error(conn, 400, f"invalid think value: {json.dumps(think)}")
            return 400
        keep_alive = body.get("keep_alive")
        if kind == "chat":
            messages = body.get("messages") or []
            texts = [str(x.get("content") or "") for x in messages if isinstance(x, dict)]
            users = [str(x.get("content") or "") for x in messages
                     if isinstance(x, dict) and str(x.get("role", "")).lower() == "user"]
            text, empty = (users[-1] if users else ""), not messages
        else:
            text = str(body.get("prompt") or "")
            texts = [text, str(body.get("system") or "")]
            empty = not text and not body.get("images")
        if empty:  # the load/unload shortcut
            unload = keep_alive in (0, "0", "0s", 0.0)
            self.state.loaded.pop(m["name"], None) if unload else self._touch(m["name"])
            reply: dict[str, Any] = {"model": model, "created_at": rfc3339nano()}
            if kind == "chat":
                reply["message"] = {"role": "assistant", "content": ""}
            else:
                reply["response"] = ""
            reply.update(done=True, done_reason="unload" if unload else "load")
            await self.json(conn, 200, reply)
            return 200
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        num_predict = options.get("num_predict")
        fault = cfg.fault if cfg.fault_count != 0 else None
        try:
            plan = make_plan(text, tokens=cfg.tokens, delay_ms=cfg.delay_ms, global_fault=fault,
                             num_predict=num_predict if isinstance(num_predict, int) else None)
        except DirectiveError as exc:
            await self.error(conn, 400, str(exc))
            return 400
        if plan.used_global_fault and cfg.fault_count > 0:
            cfg.fault_count -= 1
        rec.fault = plan.fault
        self._touch(m["name"])
        if plan.fault == "status-404":
            await self.error(conn, 404, f"model '{model}' not found")
            return 404
        if plan.fault == "status-503":
            await self.error(conn, 503, BUSY_ERROR)
            return 503
        if plan.fault == "status-500":
            await self.error(conn, 500, RUNNER_ERROR)
            return 500
        ctx = _Answer(kind, model, plan, count_words(*texts), raw=bool(body.get("raw")))
        async with self.watching(conn) as watch:
            if plan.fault == "hang":  # nothing at all, not even the status line
                await self.pause(watch, plan.stall_seconds)
            if body.get("stream", True) is not False:
                return await self._stream(conn, watch, ctx, rec)
            return await self._whole(conn, watch, ctx, rec)

    def _touch(self, name: str) -> None:
        self.state.loaded[name] = time.time() + 300

    async def _stream(self, conn: HttpConnection, watch: asyncio.Task[None], a: _Answer,
                      rec: RequestRecord) -> int:
        plan = a.plan
        await conn.start_chunked(200, NDJSON)
        if plan.burst and plan.fault is None:
            lines = [a.line(tok) for tok in plan.tokens] + [a.line("", final=True)]
            await conn.write(b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in lines)
                             + b"0\r\n\r\n")
            rec.tokens_sent = len(plan.tokens)
            return 200
        strike = min(FAULT_AFTER_TOKENS, len(plan.tokens))
        for i, tok in enumerate(plan.tokens):
            if i == strike and plan.fault in _MID_STREAM:
                return await self._strike(conn, a, rec)
            await self.pause(watch, plan.delay)
            await conn.send_chunk(a.line(tok, raw_u2028=plan.fault == "raw-u2028" and i == strike))
            rec.tokens_sent += 1
            if plan.fault == "stall" and i == 0:
                await self.pause(watch, plan.stall_seconds)
            if plan.fault == "trickle" and i == 0:
                # Leading whitespace of the next line: json.loads skips it.
                await self.trickle(conn, watch, plan.stall_seconds, b" ")
        if len(plan.tokens) == strike and plan.fault in _MID_STREAM:
            return await self._strike(conn, a, rec)
        if plan.fault == "no-done":
            await conn.end_chunked()
            return 200
        # The done line and the terminating chunk in one write: a client that stops
        # reading after ``done`` has still received the whole response.
        done = a.line("", final=True)
        await conn.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        return 200

    async def _strike(self, conn: HttpConnection, a: _Answer, rec: RequestRecord) -> int:
        """The fault after a few tokens; returns 200 (the status line already went out)."""
        fault = a.plan.fault
        if fault == "cut-mid-stream":
            conn.close()  # FIN without the final chunk: httpx says "incomplete chunked read"
            return 200
        if fault == "reset-mid-stream":
            conn.abort()
            return 200
        if fault == "error-mid-stream":
            await conn.send_chunk(dumps({"error": MID_STREAM_ERROR}) + b"\n")
        elif fault == "bad-json":
            await conn.send_chunk(b'{"model":"' + a.model.encode() + b'","created_at":\n')
        elif fault == "blank-line":
            await conn.send_chunk(b"\n")
        elif fault == "no-message":
            await conn.send_chunk(dumps({"model": a.model, "created_at": rfc3339nano(),
                                         "done": False}) + b"\n")
        await conn.end_chunked()
        return 200

    async def _whole(self, conn: HttpConnection, watch: asyncio.Task[None], a: _Answer,
                     rec: RequestRecord) -> int:
        """``stream: false``: one application/json object, no trailing newline."""
        plan = a.plan
        if plan.fault in ("stall", "trickle"):
            await self.pause(watch, plan.stall_seconds)
        await self.pause(watch, plan.delay * len(plan.tokens))
        if plan.fault in ("cut-mid-stream", "reset-mid-stream"):
            conn.close() if plan.fault == "cut-mid-stream" else conn.abort()
            return 0
        if plan.fault == "error-mid-stream":
            await self.error(conn, 500, MID_STREAM_ERROR)
            return 500
        if plan.fault == "bad-json":
            await conn.send(200, JSON, b'{"model":"' + a.model.encode() + b'","created_at":')
            return 200
        rec.tokens_sent = len(plan.tokens)
        obj = a.obj(plan.text, final=True)
        if plan.fault == "no-message":
            obj.pop("message", None)
        await self.json(conn, 200, obj)
        return 200

    # -- OpenAI-compatible endpoints -------------------------------------------------
    async def v1_error(self, conn: HttpConnection, status: int, message: str,
                       code: str | int | None = None) -> None:
        await self.json(conn, status, oai.error_body(status, message, code))

    async def v1_authorized(self, conn: HttpConnection, req: Request) -> bool:
        key = self.state.config.api_key
        if key and req.headers.get("authorization") != f"Bearer {key}":
            await self.v1_error(conn, 401, "Invalid API Key", "invalid_api_key")
            return False
        return True

    async def health(self, conn: HttpConnection, req: Request) -> None:
        await self.json(conn, 200, {"status": "ok"})

    async def v1_models(self, conn: HttpConnection, req: Request) -> None:
        if not await self.v1_authorized(conn, req):
            return
        models = sorted(self.state.models.values(), key=lambda m: m["modified_at"], reverse=True)
        await self.listing(conn, oai.models_body([m["name"] for m in models], time.time()), req)

    async def v1_chat(self, conn: HttpConnection, req: Request) -> None:
        if not await self.v1_authorized(conn, req):
            return
        body = self.body(req)
        if isinstance(body, str):
            return await self.v1_error(conn, 400, body)
        rec = self.record(conn, req, body)
        try:
            rec.status = await self._v1_answer(conn, body, rec)
        except (ClientGone, ConnectionError, OSError):
            rec.aborted_by_client = True
            raise
        finally:
            rec.finished = time.time()

    async def _v1_answer(self, conn: HttpConnection, body: dict[str, Any],
                         rec: RequestRecord) -> int:
        cfg = self.state.config
        model = str(body.get("model") or "")
        messages = body.get("messages")
        if not model or not isinstance(messages, list) or not messages:
            await self.v1_error(conn, 400, "'model' and a non-empty 'messages' are required")
            return 400
        m = self.find(model)
        if m is None:
            await self.v1_error(conn, 404, f"The model `{model}` does not exist",
                                "model_not_found")
            return 404
        texts = [str(x.get("content") or "") for x in messages if isinstance(x, dict)]
        users = [str(x.get("content") or "") for x in messages
                 if isinstance(x, dict) and str(x.get("role", "")).lower() == "user"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        fault = cfg.fault if cfg.fault_count != 0 else None
        try:
            plan = make_plan(users[-1] if users else "", tokens=cfg.tokens,
                             delay_ms=cfg.delay_ms, global_fault=fault,
                             num_predict=max_tokens if isinstance(max_tokens, int) else None)
        except DirectiveError as exc:
            await self.v1_error(conn, 400, str(exc))
            return 400
        if plan.used_global_fault and cfg.fault_count > 0:
            cfg.fault_count -= 1
        rec.fault = plan.fault
        self._touch(m["name"])
        if plan.fault == "status-404":
            await self.v1_error(conn, 404, f"The model `{model}` does not exist",
                                "model_not_found")
            return 404
        if plan.fault == "status-503":
            await self.v1_error(conn, 503, "Loading model", "unavailable")
            return 503
        if plan.fault == "status-500":
            await self.v1_error(conn, 500, RUNNER_ERROR)
            return 500
        c = oai.Completion(model, plan, count_words(*texts), rec.id)
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        async with self.watching(conn) as watch:
            if plan.fault == "hang":
                await self.pause(watch, plan.stall_seconds)
            if body.get("stream") is True:
                return await self._v1_stream(conn, watch, c, rec, usage)
            return await self._v1_whole(conn, watch, c, rec)

    async def _v1_stream(self, conn: HttpConnection, watch: asyncio.Task[None],
                         c: oai.Completion, rec: RequestRecord, usage: bool) -> int:
        plan = c.plan
        await conn.start_chunked(200, oai.SSE)
        await conn.send_chunk(oai.event(c.chunk({"role": "assistant", "content": ""})))
        strike = min(FAULT_AFTER_TOKENS, len(plan.tokens))
        for i, tok in enumerate(plan.tokens):
            if i == strike and plan.fault in _MID_STREAM:
                return await self._v1_strike(conn, c)
            await self.pause(watch, plan.delay)
            raw = plan.fault == "raw-u2028" and i == strike
            await conn.send_chunk(oai.event(c.chunk({"content": tok + ("\u2028" if raw else "")}),
                                            raw_unicode=raw))
            rec.tokens_sent += 1
            if plan.fault == "stall" and i == 0:
                await self.pause(watch, plan.stall_seconds)
            if plan.fault == "trickle" and i == 0:
                # SSE comments, as services send to keep a quiet stream open.
                await self.trickle(conn, watch, plan.stall_seconds, b": keep-alive\n\n")
        if len(plan.tokens) == strike and plan.fault in _MID_STREAM:
            return await self._v1_strike(conn, c)
        if plan.fault == "no-done":  # no finish_reason, no [DONE]: the stream just ends
            await conn.end_chunked()
            return 200
        tail = oai.event(c.chunk({}, plan.done_reason))
        if usage:
            tail += oai.event(c.usage_chunk())
        tail += oai.DONE
        # The rest and the terminating chunk in one write: a client that stops
        # reading at [DONE] has still received the whole response.
        await conn.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        return 200

    async def _v1_strike(self, conn: HttpConnection, c: oai.Completion) -> int:
        fault = c.plan.fault
        if fault == "cut-mid-stream":
            conn.close()
            return 200
        if fault == "reset-mid-stream":
            conn.abort()
            return 200
        if fault == "error-mid-stream":
            await conn.send_chunk(oai.event(oai.error_body(500, MID_STREAM_ERROR)))
        elif fault == "bad-json":
            await conn.send_chunk(b'data: {"id":"' + c.id.encode() + b'","choices":\n\n')
        elif fault == "blank-line":
            await conn.send_chunk(b"data: \n\n")
        elif fault == "no-message":
            await conn.send_chunk(oai.event({"id": c.id, "object": "chat.completion.chunk",
                                             "created": c.created, "model": c.model}))
        await conn.end_chunked()
        return 200

    async def _v1_whole(self, conn: HttpConnection, watch: asyncio.Task[None],
                        c: oai.Completion, rec: RequestRecord) -> int:
        plan = c.plan
        if plan.fault in ("stall", "trickle"):
            await self.pause(watch, plan.stall_seconds)
        await self.pause(watch, plan.delay * len(plan.tokens))
        if plan.fault in ("cut-mid-stream", "reset-mid-stream"):
            conn.close() if plan.fault == "cut-mid-stream" else conn.abort()
            return 0
        if plan.fault == "error-mid-stream":
            await self.v1_error(conn, 500, MID_STREAM_ERROR)
            return 500
        if plan.fault == "bad-json":
            await conn.send(200, JSON, b'{"id":"' + c.id.encode() + b'","choices":')
            return 200
        rec.tokens_sent = len(plan.tokens)
        obj = c.whole()
        if plan.fault == "no-message":
            obj.pop("choices", None)
        await self.json(conn, 200, obj)
        return 200

    # -- test control --------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        cfg = self.state.config
        return {"version": cfg.version, "tokens": cfg.tokens, "delay_ms": cfg.delay_ms,
                "pull_seconds": cfg.pull_seconds, "refuse_pull": cfg.refuse_pull,
                "fault": cfg.fault, "fault_count": cfg.fault_count,
                "listing_trickle": cfg.listing_trickle,
                "api_key": "[set]" if cfg.api_key else None,
                "models": sorted(self.state.models)}

    async def control(self, conn: HttpConnection, req: Request) -> None:
        if req.method == "POST":
            body = self.body(req)
            if isinstance(body, str):
                return await self.error(conn, 400, body)
            cfg = self.state.config
            try:
                if "fault" in body:
                    fault = body["fault"]
                    if fault is not None:
                        parse_fault(str(fault))
                    cfg.fault = fault
                    cfg.fault_count = int(body.get("fault_count", -1))
                elif "fault_count" in body:
                    cfg.fault_count = int(body["fault_count"])
                for key, conv in (("tokens", int), ("delay_ms", float),
                                  ("pull_seconds", float), ("refuse_pull", bool),
                                  ("listing_trickle", float)):
                    if key in body:
                        setattr(cfg, key, conv(body[key]))
                if "models" in body:
                    keep = {normalize(n) for n in body["models"]}
                    self.state.models = {k: v for k, v in self.state.models.items() if k in keep}
                    for n in body["models"]:
                        self._add_model(self.state, n)
            except (ValueError, TypeError) as exc:
                return await self.error(conn, 400, str(exc))
        await self.json(conn, 200, self._settings())

    async def requests(self, conn: HttpConnection, req: Request) -> None:
        await self.json(conn, 200, [asdict(r) for r in self.state.requests])

    async def reset(self, conn: HttpConnection, req: Request) -> None:
        self.state = self._fresh_state()
        await self.json(conn, 200, self._settings())


_MID_STREAM = frozenset({"error-mid-stream", "cut-mid-stream", "reset-mid-stream", "bad-json",
                         "blank-line", "no-message"})


@dataclass
class _Answer:
    """Builds the NDJSON lines of one answer in Go struct key order."""

    kind: str
    model: str
    plan: Plan
    prompt_tokens: int
    raw: bool = False
    started_ns: int = field(default_factory=time.monotonic_ns)

    def obj(self, content: str, *, final: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model, "created_at": rfc3339nano()}
        if self.kind == "chat":
            d["message"] = {"role": "assistant", "content": content}
        else:
            d["response"] = content
        d["done"] = final
        if final:
            n = len(self.plan.tokens)
            total = max(time.monotonic_ns() - self.started_ns, 1)
            d["done_reason"] = self.plan.done_reason
            if self.kind == "generate" and not self.raw:
                d["context"] = list(range(1, min(self.prompt_tokens + n, 64) + 1))
            prompt_ns = self.prompt_tokens * PROMPT_NS_PER_TOKEN
            d.update(total_duration=LOAD_DURATION_NS + prompt_ns + total,
                     load_duration=LOAD_DURATION_NS, prompt_eval_count=self.prompt_tokens,
                     prompt_eval_duration=prompt_ns, eval_count=n, eval_duration=total)
        return d

    def line(self, content: str, *, final: bool = False, raw_u2028: bool = False) -> bytes:
        if raw_u2028:  # what a careless encoder sends: splitlines() breaks the line in two
            return json.dumps(self.obj(content + "\u2028"), ensure_ascii=False,
                              separators=(",", ":")).encode() + b"\n"
        return dumps(self.obj(content, final=final)) + b"\n"


async def serve(config: Config, *, started: Callable[[str, int], None] | None = None) -> None:
    """Listen until SIGTERM/SIGINT, then close every connection and return."""
    # Handlers first: a SIGTERM right after the Listening line must still exit 0.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    standin = StandIn(config)
    server = await asyncio.start_server(standin.handle, config.host, config.port,
                                        reuse_address=True, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"Listening on {host}:{port} (version {config.version})", flush=True)
    if started is not None:
        started(config.host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        standin.shutdown()
