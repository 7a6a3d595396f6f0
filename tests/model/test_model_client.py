"""ModelClient against a real stand-in process: streaming, every failure mode of
docs/MODEL-APIS.md (Ollama), cancellation, pulling, and the service going away."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from chat_server.model import (
    ModelChunk,
    ModelClient,
    ModelError,
    ModelFailed,
    ModelUnavailable,
)
from ollama_standin import say

from tests.fixtures.standin import StandIn


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def collect(client: ModelClient, text: str, **kw) -> list[ModelChunk]:
    async with contextlib.aclosing(client.chat(user(text), **kw)) as chunks:
        return [c async for c in chunks]


async def failure(client: ModelClient, text: str) -> tuple[ModelError, list[ModelChunk]]:
    got: list[ModelChunk] = []
    with pytest.raises(ModelError) as err:
        async with contextlib.aclosing(client.chat(user(text))) as chunks:
            async for c in chunks:
                got.append(c)
    return err.value, got


def assert_user_safe(exc: ModelError, url: str) -> None:
    text = str(exc)
    assert 10 < len(text) < 120 and text.endswith(".")
    for leak in ("http", "127.0.0.1", url, "Traceback", "Error:", "httpx", "status code"):
        assert leak not in text
    assert exc.detail and exc.detail != text  # the technical version, for logs


# -- streaming --------------------------------------------------------------------------
def test_streams_chunks_then_done_with_counts(standin: StandIn) -> None:
    async def go() -> list[ModelChunk]:
        client = ModelClient(standin.url, "llama3.2")
        try:
            return await collect(client, "hello there", system="be brief")
        finally:
            await client.aclose()

    chunks = run(go())
    *text, final = chunks
    assert "".join(c.text for c in text).startswith("Echo: hello there lorem ipsum")
    assert all(c.text and not c.done for c in text) and len(text) == 20
    assert final == ModelChunk("", done=True, done_reason="stop", prompt_tokens=4,
                               answer_tokens=20)
    (req,) = standin.requests()
    assert req["body"]["messages"] == [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "hello there"}]
    assert req["body"]["stream"] is True


def test_passes_text_through_unchanged(standin: StandIn) -> None:
    text = "\u201cquoted\u201d caf\u00e9 \U0001F600 a\u2028b" + " " * 70 + "<&>"

    async def go() -> str:
        client = ModelClient(standin.url, "llama3.2:latest", keep_alive="5m",
                             options={"temperature": 0})
        chunks = await collect(client, say(text))
        await client.aclose()
        assert client.ready and client.state == "ready"
        return "".join(c.text for c in chunks)

    assert run(go()) == text
    body = standin.requests()[0]["body"]
    assert body["keep_alive"] == "5m" and body["options"] == {"temperature": 0}


# -- failures ---------------------------------------------------------------------------
@pytest.mark.parametrize(("directive", "kind", "tokens_before"), [
    ("status-404", ModelUnavailable, 0),
    ("status-503", ModelUnavailable, 0),
    ("status-500", ModelFailed, 0),
    ("error-mid-stream", ModelFailed, 2),
    ("cut-mid-stream", ModelFailed, 2),
    ("reset-mid-stream", ModelFailed, None),  # an RST may also drop bytes in flight
    ("no-done", ModelFailed, 20),
    ("bad-json", ModelFailed, 2),
    ("blank-line", ModelFailed, 2),
    ("no-message", ModelFailed, 2),
    ("raw-u2028", ModelFailed, 2),
])
def test_each_failure_maps_to_a_readable_error(standin: StandIn, directive: str,
                                               kind: type[ModelError],
                                               tokens_before: int | None) -> None:
    async def go() -> tuple[ModelError, list[ModelChunk]]:
        client = ModelClient(standin.url, "llama3.2")
        try:
            return await failure(client, f"[standin:{directive}]")
        finally:
            await client.aclose()

    exc, got = run(go())
    assert type(exc) is kind
    assert_user_safe(exc, standin.url)
    assert not any(c.done for c in got)
    if tokens_before is not None:
        assert len(got) == tokens_before


def test_messages_differ_by_cause(standin: StandIn) -> None:
    async def go() -> dict[str, str]:
        client = ModelClient(standin.url, "llama3.2")
        out = {}
        for d in ("status-404", "status-503", "error-mid-stream", "cut-mid-stream", "bad-json"):
            out[d] = str((await failure(client, f"[standin:{d}]"))[0])
        await client.aclose()
        return out

    messages = run(go())
    assert len(set(messages.values())) == len(messages)
    assert "busy" in messages["status-503"]


def test_missing_model_is_unavailable_and_not_ready(standin: StandIn) -> None:
    async def go() -> ModelClient:
        client = ModelClient(standin.url, "mistral")
        exc, _ = await failure(client, "hi")
        assert isinstance(exc, ModelUnavailable) and "404" in exc.detail
        await client.aclose()
        return client

    client = run(go())
    assert client.state == "unavailable" and not client.ready


def test_read_stall_is_model_failed(standin: StandIn) -> None:
    async def go() -> tuple[ModelError, list[ModelChunk]]:
        client = ModelClient(standin.url, "llama3.2", read_timeout=0.5)
        try:
            return await failure(client, "[standin:stall=30]")
        finally:
            await client.aclose()

    exc, got = run(go())
    assert type(exc) is ModelFailed and "too long" in str(exc)
    assert [c.text for c in got] == ["Echo:"]
    (rec,) = standin.wait_for_requests(1)
    assert rec["aborted_by_client"] is True  # the client hung up; the stand-in noticed


def test_connection_refused_is_unavailable(standin: StandIn) -> None:
    standin.stop()

    async def go() -> ModelError:
        client = ModelClient(standin.url, "llama3.2")
        try:
            return (await failure(client, "hi"))[0]
        finally:
            await client.aclose()

    exc = run(go())
    assert type(exc) is ModelUnavailable and "not reachable" in str(exc)
    assert_user_safe(exc, standin.url)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang in SYN-SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.settimeout(0.3)
        with contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    yield port
    for s in [*fillers, listener]:
        s.close()


def test_connect_timeout_is_unavailable(black_hole: int) -> None:
    async def go() -> ModelError:
        client = ModelClient(f"http://127.0.0.1:{black_hole}", "llama3.2", connect_timeout=0.3)
        try:
            return (await failure(client, "hi"))[0]
        finally:
            await client.aclose()

    exc = run(go())
    assert type(exc) is ModelUnavailable and "ConnectTimeout" in exc.detail


# -- cancellation ----------------------------------------------------------------------
def test_closing_early_aborts_the_upstream_request(standin_factory) -> None:
    s = standin_factory(delay_ms=20, tokens=1000)

    async def go() -> list[str]:
        client = ModelClient(s.url, "llama3.2")
        got = []
        async with contextlib.aclosing(client.chat(user("long"))) as chunks:
            async for c in chunks:
                got.append(c.text)
                if len(got) == 3:
                    break
        # Block the event loop on purpose: the stream must already be closed when
        # aclose() returns, not later by a garbage-collection finalizer task.
        (rec,) = s.wait_for_requests(1, timeout=10)
        assert rec["aborted_by_client"] is True and rec["tokens_sent"] < 1000
        await client.aclose()
        return got

    assert run(go()) == ["Echo:", " long", " lorem"]


def test_cancelling_the_task_aborts_the_upstream_request(standin_factory) -> None:
    s = standin_factory(delay_ms=20, tokens=1000)

    async def go() -> int:
        client = ModelClient(s.url, "llama3.2")
        first = asyncio.Event()
        got = 0

        async def consume() -> None:
            nonlocal got
            async with contextlib.aclosing(client.chat(user("long"))) as chunks:
                async for _ in chunks:
                    got += 1
                    first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
        return got

    assert run(go()) < 1000
    (rec,) = s.wait_for_requests(1)
    assert rec["aborted_by_client"] is True


def test_a_complete_answer_is_not_an_abort(standin: StandIn) -> None:
    async def go() -> None:
        client = ModelClient(standin.url, "llama3.2")
        for _ in range(3):
            assert (await collect(client, "x"))[-1].done
        await client.aclose()

    run(go())
    reqs = standin.wait_for_requests(3)
    assert [r["aborted_by_client"] for r in reqs] == [False, False, False]


# -- readiness and pulling ---------------------------------------------------------------
def test_ensure_model_pulls_with_progress(standin_factory) -> None:
    s = standin_factory(models="", pull_seconds=1.5)
    lines: list[str] = []

    async def go() -> ModelClient:
        client = ModelClient(s.url, "llama3.2")
        assert client.state == "starting" and not client.ready
        await client.ensure_model(lines.append)
        chunks = await collect(client, "after pull")
        assert chunks[-1].done
        await client.aclose()
        return client

    client = run(go())
    assert client.ready and client.state == "ready"
    joined = "\n".join(lines)
    assert "pulling manifest" in joined and "success" in joined
    assert any("%" in line for line in lines)
    assert "100%" in joined
    assert len(lines) < 25  # the stand-in sent ~35 progress lines: they were throttled
    assert lines[-1] == "model llama3.2 is available"
    assert "llama3.2:latest" in s.control()["models"]


def test_present_model_is_not_pulled(standin: StandIn) -> None:
    lines: list[str] = []

    async def go() -> None:
        client = ModelClient(standin.url, "llama3.2")
        await client.ensure_model(lines.append)
        await client.aclose()

    run(go())
    assert lines == ["model llama3.2 is available"]


def test_failed_pull_is_unavailable(standin_factory) -> None:
    s = standin_factory(models="")
    s.control(refuse_pull=True)

    async def go() -> ModelClient:
        client = ModelClient(s.url, "llama3.2")
        with pytest.raises(ModelUnavailable) as err:
            await client.ensure_model()
        assert "file does not exist" in err.value.detail
        assert_user_safe(err.value, s.url)
        await client.aclose()
        return client

    client = run(go())
    assert client.state == "unavailable" and not client.ready


def test_unavailable_then_available(standin: StandIn) -> None:
    standin.stop()

    async def down(client: ModelClient) -> None:
        with pytest.raises(ModelUnavailable):
            await client.ensure_model(retry_for=0)
        assert client.state == "unavailable" and not client.ready
        assert "not reachable" in client.state_detail

    async def go() -> None:
        client = ModelClient(standin.url, "llama3.2")
        await down(client)
        standin.start()
        assert (await collect(client, "back"))[-1].done
        await client.ensure_model()
        assert client.ready
        standin.stop()
        exc, _ = await failure(client, "gone")
        assert isinstance(exc, ModelUnavailable) and client.state == "unavailable"
        await client.aclose()

    run(go())


def test_wait_ready_forever_waits_for_the_service(standin: StandIn) -> None:
    standin.stop()
    lines: list[str] = []

    async def go() -> ModelClient:
        client = ModelClient(standin.url, "llama3.2", retry_interval=(0.05, 0.2))
        waiter = asyncio.create_task(client.wait_ready_forever(lines.append))
        while client.state != "unavailable":
            await asyncio.sleep(0.02)
        assert not waiter.done()
        await asyncio.to_thread(standin.start)
        await waiter
        await client.aclose()
        return client

    client = run(go())
    assert client.ready and client.state == "ready"
    assert any("not reachable" in line for line in lines)
    assert lines[-1] == "model llama3.2 is available"


def test_missing_model_without_pull(standin_factory) -> None:
    s = standin_factory(models="")

    async def go() -> ModelClient:
        client = ModelClient(s.url, "llama3.2")
        with pytest.raises(ModelUnavailable) as err:
            await client.ensure_model(pull=False)
        assert "pulling is disabled" in err.value.detail
        await client.aclose()
        return client

    client = run(go())
    assert client.state == "unavailable" and s.control()["models"] == []


def test_server_mode_recovers_after_the_service_returns(standin: StandIn) -> None:
    """After wait_ready_forever, a failed chat starts the readiness loop again."""
    lines: list[str] = []

    async def go() -> None:
        client = ModelClient(standin.url, "llama3.2", retry_interval=(0.05, 0.2))
        await client.wait_ready_forever(lines.append)
        assert client.ready
        await asyncio.to_thread(standin.stop)
        exc, _ = await failure(client, "anyone?")
        assert isinstance(exc, ModelUnavailable) and not client.ready
        await asyncio.to_thread(standin.start)
        while not client.ready:  # bounded by run()'s timeout
            await asyncio.sleep(0.02)
        assert (await collect(client, "back"))[-1].done
        await client.aclose()

    run(go())
    assert lines.count("model llama3.2 is available") == 2
