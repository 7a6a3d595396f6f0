"""
The real tiny model answers through the official ``openai`` client: proof that
the ``llama_server`` fixtures (tests/fixtures/llamacpp.py) serve a working
OpenAI-compatible backend, with streaming and real token counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openai import AsyncOpenAI, OpenAI

from tests.fixtures.llamacpp import MODEL_ALIAS, LlamaServer


def _client(server: LlamaServer) -> OpenAI:
    # llama-server checks no key unless started with --api-key; the client needs one.
    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


async def _stream(server: LlamaServer, prompt: str, max_tokens: int) -> dict[str, Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
    pieces: list[str] = []
    out: dict[str, Any] = {"models": set(), "finish": None, "usage": None}
    async with client:
        stream = await client.chat.completions.create(
            model=server.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            out["models"].add(chunk.model)
            if chunk.usage is not None:
                out["usage"] = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    out["finish"] = choice.finish_reason
    out["pieces"] = pieces
    return out


def test_tiny_model_streams_a_chat_completion_with_real_token_counts(
        llama_server: LlamaServer) -> None:
    limit = 24
    result = asyncio.run(_stream(
        llama_server, "Count from 1 to 100, separated by commas.", max_tokens=limit))

    text = "".join(result["pieces"])
    assert any(ch.isalnum() for ch in text), f"no real text: {text!r}"
    # Streamed token by token, not delivered as one block at the end.
    assert len(result["pieces"]) > 1, result["pieces"]
    assert result["models"] == {MODEL_ALIAS}
    # Asked for more than `limit` tokens: it stopped at the limit and says so.
    assert result["finish"] == "length"
    usage = result["usage"]
    assert usage is not None, "no usage chunk despite include_usage"
    assert usage.completion_tokens == limit
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_prompt_token_count_grows_with_the_prompt(llama_server: LlamaServer) -> None:
    client = _client(llama_server)

    def prompt_tokens(prompt: str) -> int:
        r = client.chat.completions.create(
            model=llama_server.model, max_tokens=1,
            messages=[{"role": "user", "content": prompt}])
        assert r.usage is not None
        return r.usage.prompt_tokens

    short = prompt_tokens("Hi.")
    longer = prompt_tokens("Hi. " + "Tell me about the weather in Lyon today. " * 10)
    # Ten repetitions of a nine-word sentence add far more than ten tokens.
    assert longer > short + 10 * 9, (short, longer)


def test_models_endpoint_lists_the_alias(llama_server: LlamaServer) -> None:
    ids = [m.id for m in _client(llama_server).models.list()]
    assert MODEL_ALIAS in ids


def test_private_server_restarts_on_the_same_port(llama_server_factory: Any) -> None:
    server = llama_server_factory(parallel=1)
    url = server.base_url
    server.kill()
    assert server.health() == "down"
    server.restart()
    assert server.base_url == url
    r = _client(server).chat.completions.create(
        model=server.model, max_tokens=4, messages=[{"role": "user", "content": "Say hi."}])
    assert r.usage is not None and r.usage.completion_tokens > 0
