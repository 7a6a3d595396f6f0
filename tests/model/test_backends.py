"""Each backend kind against a real stand-in process: streaming, every failure
mode mapped to a user-safe error, cancellation, model listing, pulling, keys.

The same stand-in process serves the Ollama API and the OpenAI-compatible one,
so every behaviour is checked through both official clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest
from chat_server.backends import (
    Backend,
    Cause,
    ModelChunk,
    ModelError,
    ModelFailed,
    ModelUnavailable,
    OllamaBackend,
    OpenAIBackend,
)
from ollama_standin import say

from tests.fixtures.standin import StandIn

KINDS = ["ollama", "openai"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def make(kind: str, s: StandIn, **kw) -> Backend:
    if kind == "ollama":
        return OllamaBackend("b1", s.url, **kw)
    return OpenAIBackend("b1", s.openai_url, **kw)


async def collect(b: Backend, text: str, model: str = "llama3.2") -> list[ModelChunk]:
    async with contextlib.aclosing(b.chat(model, user(text))) as chunks:
        return [c async for c in chunks]


async def failure(b: Backend, text: str) -> tuple[ModelError, list[ModelChunk]]:
    got: list[ModelChunk] = []
    with pytest.raises(ModelError) as err:
        async with contextlib.aclosing(b.chat("llama3.2", user(text))) as chunks:
            async for c in chunks:
                got.append(c)
    return err.value, got


def assert_user_safe(exc: ModelError, url: str) -> None:
    text = str(exc)
    assert 10 < len(text) < 120 and text.endswith(".")
    for leak in ("http", "127.0.0.1", url, "Traceback", "Error:", "httpx", "status code"):
        assert leak not in text
    assert exc.detail and exc.detail != text  # the technical version, for logs


def with_backend(kind: str, s: StandIn, body: Callable, **kw):
    async def go():
        b = make(kind, s, **kw)
        try:
            return await body(b)
        finally:
            await b.aclose()

    return run(go())


# -- listing and streaming ----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_lists_the_models_the_service_has(standin_factory, kind: str) -> None:
    s = standin_factory(models="llama3.2,qwen2.5:0.5b")
    names = with_backend(kind, s, lambda b: b.list_models())
    assert sorted(names) == ["llama3.2:latest", "qwen2.5:0.5b"]


@pytest.mark.parametrize("kind", KINDS)
def test_streams_chunks_then_done_with_counts(standin: StandIn, kind: str) -> None:
    async def body(b: Backend) -> list[ModelChunk]:
        async with contextlib.aclosing(b.chat("llama3.2", [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"}], answer_model="default")) as chunks:
            return [c async for c in chunks]

    *text, final = with_backend(kind, standin, body)
    assert "".join(c.text for c in text).startswith("Echo: hello there lorem ipsum")
    assert all(c.text and not c.done for c in text) and len(text) == 20
    # prompt_tokens: the stand-in counts the words of all messages.
    assert final == ModelChunk("", done=True, done_reason="stop", prompt_tokens=4,
                               answer_tokens=20, backend="b1", model="default")
    assert {(c.backend, c.model) for c in text} == {("b1", "default")}
    (req,) = standin.requests()
    assert req["body"]["messages"] == [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "hello there"}]
    assert req["body"]["stream"] is True
    if kind == "openai":
        assert req["path"] == "/v1/chat/completions"
        assert req["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", KINDS)
def test_passes_text_through_unchanged(standin: StandIn, kind: str) -> None:
    text = "\u201cquoted\u201d caf\u00e9 \U0001F600 a\u2028b" + " " * 70 + "<&>"

    async def body(b: Backend) -> str:
        return "".join(c.text for c in await collect(b, say(text)))

    assert with_backend(kind, standin, body) == text


@pytest.mark.parametrize("kind", KINDS)
def test_answer_tokens_count_what_was_generated(standin: StandIn, kind: str) -> None:
    standin.control(tokens=5)
    final = with_backend(kind, standin, lambda b: collect(b, "x"))[-1]
    assert final.done and final.answer_tokens == 5 and final.done_reason == "stop"


# -- failures ------------------------------------------------------------------------------
# (directive, error class, cause, tokens before the error) per kind; None: not checked.
FAILURES = {
    "status-404": (ModelUnavailable, Cause.MISSING, 0),
    "status-503": (ModelUnavailable, Cause.BUSY, 0),
    "status-500": (ModelFailed, Cause.BROKEN, 0),
    "error-mid-stream": (ModelFailed, Cause.BROKEN, 2),
    "cut-mid-stream": (ModelFailed, Cause.CUT, 2),
    "reset-mid-stream": (ModelFailed, None, None),  # an RST may also drop bytes in flight
    "no-done": (ModelFailed, Cause.CUT, 20),
    "bad-json": (ModelFailed, Cause.GARBLED, 2),
    "blank-line": (ModelFailed, Cause.GARBLED, 2),
    "no-message": (ModelFailed, None, 2),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("directive", sorted(FAILURES))
def test_each_failure_maps_to_a_readable_error(standin: StandIn, kind: str,
                                               directive: str) -> None:
    kind_cls, cause, tokens_before = FAILURES[directive]
    exc, got = with_backend(kind, standin, lambda b: failure(b, f"[standin:{directive}]"))
    assert type(exc) is kind_cls
    if cause is not None:
        assert exc.cause is cause
    assert_user_safe(exc, standin.url)
    assert not any(c.done for c in got)
    if tokens_before is not None:
        assert len(got) == tokens_before


def test_raw_line_separator_breaks_only_the_ndjson_client(standin: StandIn) -> None:
    # Ollama's client splits NDJSON with str.splitlines(), so a raw U+2028
    # inside a JSON string breaks the line; SSE splits only on CR and LF.
    exc, got = with_backend("ollama", standin, lambda b: failure(b, "[standin:raw-u2028]"))
    assert exc.cause is Cause.GARBLED and len(got) == 2
    chunks = with_backend("openai", standin, lambda b: collect(b, "[standin:raw-u2028]"))
    assert "\u2028" in "".join(c.text for c in chunks) and chunks[-1].done


@pytest.mark.parametrize("kind", KINDS)
def test_messages_differ_by_cause(standin: StandIn, kind: str) -> None:
    async def body(b: Backend) -> dict[str, str]:
        return {d: str((await failure(b, f"[standin:{d}]"))[0])
                for d in ("status-404", "status-503", "error-mid-stream", "cut-mid-stream",
                          "bad-json")}

    messages = with_backend(kind, standin, body)
    assert len(set(messages.values())) == len(messages)
    assert "busy" in messages["status-503"]


@pytest.mark.parametrize("kind", KINDS)
def test_missing_model_is_unavailable(standin: StandIn, kind: str) -> None:
    async def body(b: Backend) -> ModelError:
        async with contextlib.aclosing(b.chat("mistral", user("hi"))) as chunks:
            with pytest.raises(ModelError) as err:
                async for _ in chunks:
                    pass
        return err.value

    exc = with_backend(kind, standin, body)
    assert isinstance(exc, ModelUnavailable) and exc.cause is Cause.MISSING
    assert "404" in exc.detail and exc.retry_elsewhere


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_request_is_not_retried_elsewhere(standin: StandIn, kind: str) -> None:
    # A bad directive value makes the stand-in answer 400: the request itself
    # is wrong, so another backend would refuse it too.
    exc, got = with_backend(kind, standin, lambda b: failure(b, "[standin:tokens=many]"))
    assert exc.cause is Cause.REFUSED and not exc.retry_elsewhere and got == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("directive", [
    "[standin:stall=30]",
    # A space every 0.1 s (NDJSON) or an SSE keep-alive comment: every socket
    # read gets bytes, so httpx's read timeout never fires, yet no line comes.
    "[standin:trickle=30]",
], ids=["read_stall", "bytes_that_make_no_line"])
def test_a_stream_without_a_line_within_the_read_timeout_is_a_stall_and_hangs_up(
        standin: StandIn, kind: str, directive: str) -> None:
    exc, got = with_backend(kind, standin, lambda b: failure(b, directive), read_timeout=0.5)
    assert type(exc) is ModelFailed and exc.cause is Cause.STALLED
    assert [c.text for c in got] == ["Echo:"]
    (rec,) = standin.wait_for_requests(1)
    assert rec["aborted_by_client"] is True  # the client hung up; the stand-in noticed


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_list_that_never_ends_is_a_stall_not_a_hung_probe(standin: StandIn,
                                                                  kind: str) -> None:
    # The body a byte every 0.1 s: no read timeout fires, yet the probe (and a
    # request that waits on it) would wait for ever.
    standin.control(listing_trickle=30)

    async def body(b: Backend) -> ModelError:
        with pytest.raises(ModelError) as err:
            await b.list_models()
        return err.value

    exc = with_backend(kind, standin, body, connect_timeout=0.5, read_timeout=0.5)
    assert type(exc) is ModelFailed and exc.cause is Cause.STALLED
    standin.control(listing_trickle=0)
    assert with_backend(kind, standin, lambda b: b.list_models()) == ["llama3.2:latest"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reader_that_pauses_is_not_a_stall_of_the_model(standin: StandIn, kind: str) -> None:
    # The deadline counts only the wait for the model service, not the time the
    # answer waits for its reader (backpressure).
    async def body(b: Backend) -> list[str]:
        texts = []
        async with contextlib.aclosing(b.chat("llama3.2", user("[standin:tokens=6] slow"))) as it:
            async for chunk in it:
                texts.append(chunk.text)
                await asyncio.sleep(0.4)
        return texts

    texts = with_backend(kind, standin, body, read_timeout=0.3)
    assert "".join(texts).startswith("Echo: slow") and len(texts) >= 6


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_during_a_stall_stays_a_cancel(standin: StandIn, kind: str) -> None:
    async def body(b: Backend) -> bool:
        first = asyncio.Event()

        async def consume() -> None:
            async with contextlib.aclosing(b.chat("llama3.2", user("[standin:stall=30]"))) as it:
                async for _ in it:
                    first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert with_backend(kind, standin, body, read_timeout=5)
    (rec,) = standin.wait_for_requests(1)
    assert rec["aborted_by_client"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_unavailable(standin: StandIn, kind: str) -> None:
    standin.stop()

    async def body(b: Backend) -> tuple[ModelError, ModelError]:
        with pytest.raises(ModelUnavailable) as listing:
            await b.list_models()
        return (await failure(b, "hi"))[0], listing.value

    exc, listing = with_backend(kind, standin, body)
    for e in (exc, listing):
        assert type(e) is ModelUnavailable and e.cause is Cause.UNREACHABLE
        assert_user_safe(e, standin.url)


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


@pytest.mark.parametrize("kind", KINDS)
def test_connect_timeout_is_unavailable(black_hole: int, kind: str) -> None:
    url = f"http://127.0.0.1:{black_hole}" + ("/v1" if kind == "openai" else "")
    cls = OllamaBackend if kind == "ollama" else OpenAIBackend

    async def go() -> ModelError:
        b = cls("b1", url, connect_timeout=0.3)
        try:
            return (await failure(b, "hi"))[0]
        finally:
            await b.aclose()

    exc = run(go())
    assert type(exc) is ModelUnavailable and exc.cause is Cause.UNREACHABLE
    assert "ConnectTimeout" in exc.detail


# -- cancellation ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_closing_early_aborts_the_upstream_request(standin_factory, kind: str) -> None:
    s = standin_factory(delay_ms=20, tokens=1000)

    async def body(b: Backend) -> list[str]:
        got = []
        async with contextlib.aclosing(b.chat("llama3.2", user("long"))) as chunks:
            async for c in chunks:
                got.append(c.text)
                if len(got) == 3:
                    break
        # Block the event loop on purpose: the stream must already be closed when
        # aclose() returns, not later by a garbage-collection finalizer task.
        (rec,) = s.wait_for_requests(1, timeout=10)
        assert rec["aborted_by_client"] is True and rec["tokens_sent"] < 1000
        return got

    assert with_backend(kind, s, body) == ["Echo:", " long", " lorem"]


@pytest.mark.parametrize("kind", KINDS)
def test_cancelling_the_task_aborts_the_upstream_request(standin_factory, kind: str) -> None:
    s = standin_factory(delay_ms=20, tokens=1000)

    async def body(b: Backend) -> int:
        first = asyncio.Event()
        got = 0

        async def consume() -> None:
            nonlocal got
            async with contextlib.aclosing(b.chat("llama3.2", user("long"))) as chunks:
                async for _ in chunks:
                    got += 1
                    first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got

    assert with_backend(kind, s, body) < 1000
    (rec,) = s.wait_for_requests(1)
    assert rec["aborted_by_client"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_a_complete_answer_is_not_an_abort(standin: StandIn, kind: str) -> None:
    async def body(b: Backend) -> None:
        for _ in range(3):
            assert (await collect(b, "x"))[-1].done

    with_backend(kind, standin, body)
    reqs = standin.wait_for_requests(3)
    assert [r["aborted_by_client"] for r in reqs] == [False, False, False]

# The official openai client closes the response at ``data: [DONE]``, before the
# chunked body's terminator is read, so every answer from an OpenAI-compatible
# backend takes a new connection (docs/MODEL-APIS.md); these two are Ollama's.
@pytest.mark.parametrize("kind", ["ollama"])
def test_answers_one_after_another_reuse_one_connection(standin: StandIn, kind: str) -> None:
    # A response closed before its end would close its connection, and every
    # answer would pay for a new one.
    async def body(b: Backend) -> None:
        for _ in range(3):
            assert (await collect(b, "x"))[-1].done

    with_backend(kind, standin, body)
    reqs = standin.wait_for_requests(3)
    assert len({r["connection"] for r in reqs}) == 1


@pytest.mark.parametrize("kind", ["ollama"])
def test_as_many_connections_stay_open_as_generations_may_run(standin: StandIn,
                                                               kind: str) -> None:
    # More generations at once than httpx keeps idle connections by default (20):
    # the second wave must find all the first wave's connections still open.
    n = 30

    async def wave(b: Backend) -> None:
        finals = await asyncio.gather(*(collect(b, f"m{i}") for i in range(n)))
        assert all(f[-1].done for f in finals)

    async def body(b: Backend) -> None:
        await wave(b)
        await wave(b)

    with_backend(kind, standin, body, max_parallel=n)
    reqs = standin.wait_for_requests(2 * n)
    first = {r["connection"] for r in reqs[:n]}
    second = {r["connection"] for r in reqs[n:]}
    assert second <= first, f"{len(second - first)} new connections in the second wave"


# -- keys ------------------------------------------------------------------------------------
def test_openai_api_key_is_sent_as_a_bearer_token(standin_factory) -> None:
    s = standin_factory(api_key="sk-test-123")
    assert with_backend("openai", s, lambda b: b.list_models(),
                        api_key="sk-test-123") == ["llama3.2:latest"]
    assert with_backend("openai", s, lambda b: collect(b, "hi"), api_key="sk-test-123")[-1].done

    async def wrong(b: Backend) -> ModelError:
        with pytest.raises(ModelError) as err:
            await b.list_models()
        return err.value

    exc = with_backend("openai", s, wrong, api_key="sk-wrong")
    assert exc.cause is Cause.REFUSED and "401" in exc.detail and "sk-wrong" not in str(exc)


def test_openai_key_from_the_environment_is_never_used(standin_factory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A key meant for api.openai.com must not leak to a self-hosted backend.
    s = standin_factory(api_key="sk-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")

    async def body(b: Backend) -> ModelError:
        with pytest.raises(ModelError) as err:
            await b.list_models()
        return err.value

    assert "401" in with_backend("openai", s, body).detail


# -- pulling (Ollama) --------------------------------------------------------------------------
def test_ollama_pull_reports_progress(standin_factory) -> None:
    s = standin_factory(models="", pull_seconds=1.5)
    lines: list[str] = []
    percents: list[int] = []

    async def body(b: Backend) -> list[ModelChunk]:
        assert await b.list_models() == []
        await b.pull("llama3.2", lines.append, percents.append)
        assert await b.list_models() == ["llama3.2:latest"]
        return await collect(b, "after pull")

    assert with_backend("ollama", s, body)[-1].done
    joined = "\n".join(lines)
    assert lines[0] == "model llama3.2 not present; pulling it"
    assert "pulling manifest" in joined and "success" in joined and "100%" in joined
    assert len(lines) < 25  # the stand-in sent ~35 progress lines: they were throttled
    assert percents == sorted(percents) and percents[-1] == 100


def test_ollama_failed_pull_is_unavailable(standin_factory) -> None:
    s = standin_factory(models="")
    s.control(refuse_pull=True)

    async def body(b: Backend) -> ModelError:
        with pytest.raises(ModelUnavailable) as err:
            await b.pull("llama3.2", lambda _: None, lambda _: None)
        return err.value

    exc = with_backend("ollama", s, body)
    assert exc.cause is Cause.PULL_FAILED and "file does not exist" in exc.detail
    assert_user_safe(exc, s.url)


def test_openai_backends_cannot_pull(standin: StandIn) -> None:
    async def body(b: Backend) -> None:
        assert not b.can_pull
        with pytest.raises(NotImplementedError):
            await b.pull("x", lambda _: None, lambda _: None)

    with_backend("openai", standin, body)
