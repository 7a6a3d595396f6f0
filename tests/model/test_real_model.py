"""The OpenAI-compatible backend and the pool against a real model: llama.cpp's
llama-server with SmolLM2-135M (the ``llama_server`` fixtures, docs/ENGINES.md).

What the stand-in cannot prove: that the official client and our mapping read a
real server's stream, real token counts come back, and closing the stream stops
the generation on the server (its own metrics say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from typing import Any

from chat_server.backends import (
    BackendHealth,
    BackendPool,
    ModelChunk,
    OllamaBackend,
    OpenAIBackend,
)

from tests.fixtures.llamacpp import LlamaServer
from tests.fixtures.standin import StandIn

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def metrics(server: LlamaServer) -> dict[str, float]:
    with _OPENER.open(f"{server.root_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


async def ask(backend: OpenAIBackend, model: str, text: str) -> list[ModelChunk]:
    async with contextlib.aclosing(backend.chat(model, [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}])) as chunks:
        return [c async for c in chunks]


def test_openai_backend_streams_the_real_model_with_real_counts(
        llama_server: LlamaServer) -> None:
    async def go() -> tuple[list[str], list[ModelChunk]]:
        b = OpenAIBackend("cpu", llama_server.base_url)
        try:
            return await b.list_models(), await ask(b, llama_server.model,
                                                   "Name three colours, one per line.")
        finally:
            await b.aclose()

    names, chunks = run(go())
    assert llama_server.model in names
    *text, final = chunks
    assert len(text) > 3 and "".join(c.text for c in text).strip()
    assert final.done and final.done_reason in ("stop", "length")
    # usage from stream_options.include_usage: the tokenizer's counts
    assert final.prompt_tokens is not None and final.prompt_tokens > 10
    assert final.answer_tokens is not None and final.answer_tokens >= len(text) - 1
    assert {(c.backend, c.model) for c in chunks} == {("cpu", llama_server.model)}


def test_closing_the_stream_stops_the_generation_on_llama_server(
        llama_server_factory: Any) -> None:
    # --ignore-eos with a 4000-token limit: left alone it would generate until
    # the 2048-token context is full.
    server: LlamaServer = llama_server_factory(
        parallel=1, extra_args=["--ignore-eos", "-n", "4000", "--metrics"])

    async def go() -> int:
        b = OpenAIBackend("cpu", server.base_url)
        got = 0
        try:
            async with contextlib.aclosing(b.chat(server.model, [
                    {"role": "user", "content": "Tell a very long story."}])) as chunks:
                async for _ in chunks:
                    got += 1
                    if got == 5:
                        break
        finally:
            await b.aclose()
        return got

    assert run(go()) == 5
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing check
    while metrics(server).get("requests_processing", 1) != 0:
        assert time.monotonic() < deadline, "llama-server still generating"
        time.sleep(0.1)
    assert metrics(server)["tokens_predicted_total"] < 200


def test_pool_routes_each_model_to_the_backend_that_has_it(llama_server: LlamaServer,
                                                           standin: StandIn) -> None:
    async def go() -> dict[str, str]:
        pool = BackendPool([OpenAIBackend("cpu", llama_server.base_url),
                            OllamaBackend("gpu", standin.url)],
                           default_model="llama3.2", models=("llama3.2", llama_server.model),
                           pull=False, probe_interval=1.0)
        pool.start()
        try:
            while any(s.state is BackendHealth.STARTING for s in pool.status()):
                await asyncio.sleep(0.02)
            status = {s.name: s.models for s in pool.status()}
            assert status == {"cpu": (llama_server.model,), "gpu": ("llama3.2",)}
            out = {}
            for model in pool.models:
                async with contextlib.aclosing(pool.stream("u", model, [
                        {"role": "user", "content": "Say hello."}])) as chunks:
                    final = [c async for c in chunks][-1]
                out[model] = final.backend
            return out
        finally:
            await pool.aclose()

    assert run(go()) == {"llama3.2": "gpu", llama_server.model: "cpu"}
