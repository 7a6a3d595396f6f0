"""BackendPool against real stand-in processes of both kinds: discovery and
pulls, least-loaded routing, health (leave and rejoin), failover before the
first token, no splicing after it, cancel on the backend that holds the request.

Waits poll the pool's state (bounded by ``run``'s guard); nothing asserts on
how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from chat_server.backends import (
    Backend,
    BackendHealth,
    BackendPool,
    Cause,
    ModelChunk,
    ModelError,
    ModelFailed,
    ModelState,
    ModelUnavailable,
    OllamaBackend,
    OpenAIBackend,
)

from tests.fixtures.standin import StandIn

LOGGER = "chat_server.backends"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def ollama(name: str, s: StandIn, parallel: int = 2, **kw: Any) -> Backend:
    return OllamaBackend(name, s.url, max_parallel=parallel, **kw)


def openai(name: str, s: StandIn, parallel: int = 2, **kw: Any) -> Backend:
    return OpenAIBackend(name, s.openai_url, max_parallel=parallel, **kw)


@contextlib.asynccontextmanager
async def pool_of(*backends: Backend, models: tuple[str, ...] = ("llama3.2",),
                  pull: bool = True, ready: bool = True) -> AsyncIterator[BackendPool]:
    pool = BackendPool(list(backends), default_model=models[0], models=models, pull=pull,
                       probe_interval=0.5, min_probe_delay=0.05)
    pool.start()
    try:
        if ready:
            await until(lambda: all(s.state is not BackendHealth.STARTING for s in pool.status()))
        yield pool
    finally:
        await pool.aclose()


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.02)


async def answer(pool: BackendPool, text: str, *, user: str = "u",
                 model: str = "llama3.2") -> list[ModelChunk]:
    async with contextlib.aclosing(pool.stream(user, model, [
            {"role": "user", "content": text}])) as chunks:
        return [c async for c in chunks]


class Held:
    """A streaming request that has produced its first chunk and waits."""

    def __init__(self, pool: BackendPool, text: str, user: str) -> None:
        self.first = asyncio.Event()
        self.chunks: list[ModelChunk] = []
        self.error: ModelError | None = None
        self.task = asyncio.create_task(self._run(pool, text, user))

    async def _run(self, pool: BackendPool, text: str, user: str) -> None:
        try:
            async with contextlib.aclosing(pool.stream(user, "llama3.2", [
                    {"role": "user", "content": text}])) as chunks:
                async for c in chunks:
                    self.chunks.append(c)
                    self.first.set()
        except ModelError as exc:
            self.error = exc
            self.first.set()

    @property
    def backend(self) -> str:
        return self.chunks[0].backend

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)


def served_by(s: StandIn) -> int:
    return len(s.requests())


# -- discovery -----------------------------------------------------------------------------
def test_missing_models_are_pulled_on_ollama_backends_with_progress(standin_factory, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    s = standin_factory(models="", pull_seconds=1.5)

    async def go() -> None:
        async with pool_of(ollama("gpu", s), models=("llama3.2", "qwen2.5")) as pool:
            await until(lambda: pool.availability("llama3.2").state is not ModelState.READY
                        and "%" in pool.availability("llama3.2").detail)
            seen = pool.availability("llama3.2")
            assert seen.state is ModelState.LOADING and "being downloaded" in seen.detail
            await until(lambda: pool.availability("qwen2.5").state is ModelState.READY)
            assert pool.ready
            assert (await answer(pool, "pulled", model="qwen2.5"))[-1].done

    run(go())
    assert sorted(s.control()["models"]) == ["llama3.2:latest", "qwen2.5:latest"]
    text = caplog.text
    assert "backend gpu: model llama3.2 not present; pulling it" in text
    assert "backend gpu: pulling llama3.2: pulling manifest" in text and "100%" in text
    assert "model ready: llama3.2 (backends: gpu)" in text


def test_openai_backend_lacking_a_model_is_reported_and_not_routed_to(standin_factory,
                                                                       caplog) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    both = standin_factory(models="llama3.2,smollm2")
    one = standin_factory(models="llama3.2")

    async def go() -> None:
        async with pool_of(openai("cpu", one), openai("gpu", both),
                           models=("llama3.2", "smollm2")) as pool:
            status = {s.name: s.models for s in pool.status()}
            assert status == {"cpu": ("llama3.2",), "gpu": ("llama3.2", "smollm2")}
            answers = await asyncio.gather(*(answer(pool, f"q{i}", user=f"u{i}",
                                                    model="smollm2") for i in range(6)))
            assert {a[-1].backend for a in answers} == {"gpu"}

    run(go())
    assert served_by(one) == 0 and served_by(both) == 6
    assert caplog.text.count("backend cpu does not offer smollm2; requests for it are not"
                             " routed there") == 1


def test_a_model_no_backend_offers_is_a_clear_error(standin: StandIn) -> None:
    async def go() -> None:
        async with pool_of(openai("cpu", standin), models=("llama3.2", "mistral")) as pool:
            assert pool.availability("mistral").state is ModelState.UNAVAILABLE
            with pytest.raises(ModelUnavailable) as err:
                await answer(pool, "hi", model="mistral")
            assert err.value.cause is Cause.NO_BACKEND and err.value.backend is None
            with pytest.raises(ModelFailed) as unknown:
                await answer(pool, "hi", model="gpt-5")
            assert unknown.value.cause is Cause.UNKNOWN_MODEL

    run(go())
    assert standin.requests() == []


def test_resolve_matches_names_like_ollama(standin: StandIn) -> None:
    async def go() -> None:
        async with pool_of(ollama("gpu", standin), models=("llama3.2", "qwen2.5:0.5b"),
                           ready=False) as pool:
            assert pool.resolve(None) == "llama3.2" and pool.resolve("") == "llama3.2"
            assert pool.resolve("LLaMA3.2:latest") == "llama3.2"
            assert pool.resolve("qwen2.5:0.5b") == "qwen2.5:0.5b"
            assert pool.resolve("qwen2.5") is None and pool.resolve("mistral") is None

    run(go())


# -- routing ---------------------------------------------------------------------------------
def test_a_request_goes_to_the_least_loaded_backend(standin_factory) -> None:
    a, b = standin_factory(delay_ms=20, tokens=300), standin_factory(delay_ms=20, tokens=300)

    async def go() -> None:
        # a: 1 of 4 busy (0.25) beats b: 1 of 2 (0.5), then both at 0.5: the one
        # granted least recently (b), then a at 0.5 vs b at 1.0.
        async with pool_of(ollama("a", a, 4), ollama("b", b, 2)) as pool:
            first = Held(pool, "one", "u1")
            await first.first.wait()
            second = Held(pool, "two", "u2")
            await second.first.wait()
            assert {first.backend, second.backend} == {"a", "b"}
            third = Held(pool, "three", "u3")
            await third.first.wait()
            assert third.backend == "a"
            fourth = Held(pool, "four", "u4")
            await fourth.first.wait()
            assert fourth.backend == "b"
            fifth = Held(pool, "five", "u5")
            await fifth.first.wait()
            assert fifth.backend == "a"
            for h in (first, second, third, fourth, fifth):
                h.task.cancel()

    run(go())


def test_load_spreads_and_no_backend_exceeds_its_parallel(standin_factory) -> None:
    stands = [standin_factory(delay_ms=10, tokens=30) for _ in range(2)]

    async def go() -> list[list[ModelChunk]]:
        async with pool_of(*(ollama(f"b{i}", s, 2) for i, s in enumerate(stands))) as pool:
            peak = {"b0": 0, "b1": 0}

            async def watch() -> None:
                while True:
                    for st in pool.status():
                        peak[st.name] = max(peak[st.name], st.in_flight)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            answers = await asyncio.gather(*(answer(pool, f"m{i}", user=f"u{i % 5}")
                                             for i in range(16)))
            watcher.cancel()
            assert max(peak.values()) == 2
            return answers

    answers = run(go())
    by = [a[-1].backend for a in answers]
    assert by.count("b0") >= 4 and by.count("b1") >= 4
    assert served_by(stands[0]) + served_by(stands[1]) == 16
    assert all(a[-1].done and a[-1].answer_tokens == 30 for a in answers)


# -- failover ------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["status-503", "status-500", "hang=30"])
def test_failure_before_the_first_token_is_retried_on_another_backend(standin_factory,
                                                                     fault: str) -> None:
    bad, good = standin_factory(), standin_factory()
    bad.control(fault=fault)

    async def go() -> list[list[ModelChunk]]:
        async with pool_of(ollama("bad", bad, 1, read_timeout=0.5),
                           openai("good", good, 1)) as pool:
            # Two at once with one slot each: one of them is routed to "bad".
            return await asyncio.gather(answer(pool, "hello", user="u1"),
                                        answer(pool, "hello", user="u2"))

    for chunks in run(go()):
        assert "".join(c.text for c in chunks).startswith("Echo: hello lorem")
        assert chunks[-1].backend == "good" and chunks[-1].done
    assert served_by(good) == 2
    assert [r["fault"] for r in bad.requests()] == [fault.split("=")[0]]
    if fault.startswith("hang"):
        assert bad.wait_for_requests(1)[0]["aborted_by_client"] is True


def test_connection_refused_fails_over_and_takes_the_backend_out(standin_factory,
                                                                 caplog) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    gone, good = standin_factory(), standin_factory()

    async def go() -> None:
        async with pool_of(ollama("gone", gone, 2), ollama("good", good, 2)) as pool:
            gone.stop()  # the pool still believes it is up
            answers = await asyncio.gather(*(answer(pool, f"q{i}", user=f"u{i}")
                                             for i in range(4)))
            assert all(a[-1].backend == "good" for a in answers)
            states = {s.name: s.state for s in pool.status()}
            assert states["gone"] is BackendHealth.DOWN

    run(go())
    assert "backend gone (ollama at" in caplog.text and "is down: not reachable" in caplog.text
    assert caplog.text.count("trying another backend") >= 1
    assert caplog.text.count("leaves the pool") == 1


def test_failover_tries_each_backend_once_then_reports_the_error(standin_factory) -> None:
    stands = [standin_factory() for _ in range(3)]
    for s in stands:
        s.control(fault="status-503")

    async def go() -> ModelError:
        async with pool_of(*(ollama(f"b{i}", s, 1) for i, s in enumerate(stands))) as pool:
            with pytest.raises(ModelUnavailable) as err:
                await answer(pool, "anyone?")
            return err.value

    exc = run(go())
    assert exc.cause is Cause.BUSY and exc.backend in {"b0", "b1", "b2"}
    assert [served_by(s) for s in stands] == [1, 1, 1]


def test_failure_after_tokens_ends_the_answer_without_a_retry(standin_factory) -> None:
    a, b = standin_factory(), standin_factory()

    async def go() -> tuple[list[ModelChunk], ModelError]:
        async with pool_of(ollama("a", a), openai("b", b)) as pool:
            got: list[ModelChunk] = []
            with pytest.raises(ModelFailed) as err:
                async with contextlib.aclosing(pool.stream("u", "llama3.2", [
                        {"role": "user", "content": "hi [standin:error-mid-stream]"}])) as chunks:
                    async for c in chunks:
                        got.append(c)
            return got, err.value

    got, exc = run(go())
    assert [c.text for c in got] == ["Echo:", " hi"]  # no second copy, nothing spliced
    assert exc.cause is Cause.BROKEN and exc.backend == got[0].backend
    assert served_by(a) + served_by(b) == 1


def test_malformed_request_is_not_retried(standin_factory) -> None:
    a, b = standin_factory(), standin_factory()

    async def go() -> ModelError:
        async with pool_of(ollama("a", a), ollama("b", b)) as pool:
            with pytest.raises(ModelFailed) as err:
                await answer(pool, "[standin:delay-ms=soon]")
            return err.value

    assert run(go()).cause is Cause.REFUSED
    assert served_by(a) + served_by(b) == 1


# -- cancel -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kinds", [("ollama", "openai"), ("openai", "ollama")])
def test_cancel_aborts_the_request_on_the_backend_that_holds_it(standin_factory,
                                                                kinds: tuple[str, str]) -> None:
    stands = {"x": standin_factory(delay_ms=20, tokens=1000),
              "y": standin_factory(delay_ms=20, tokens=1000)}
    make = {"ollama": ollama, "openai": openai}

    async def go() -> str:
        async with pool_of(make[kinds[0]]("x", stands["x"]),
                           make[kinds[1]]("y", stands["y"])) as pool:
            held = Held(pool, "long", "u")
            await until(lambda: len(held.chunks) >= 3)
            held.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.task
            return held.backend

    holder = run(go())
    other = "y" if holder == "x" else "x"
    (rec,) = stands[holder].wait_for_requests(1)
    assert rec["aborted_by_client"] is True and rec["tokens_sent"] < 1000
    assert stands[other].requests() == []


# -- health ------------------------------------------------------------------------------------
def test_a_stopped_backend_leaves_the_pool_and_rejoins_when_back(standin_factory,
                                                                 caplog) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    a, b = standin_factory(delay_ms=5), standin_factory(delay_ms=5)

    async def go() -> None:
        async with pool_of(ollama("a", a, 1), ollama("b", b, 1)) as pool:
            # b holds a long answer; a request waits for a slot; then a dies.
            long_b = Held(pool, "[standin:tokens=100] [standin:delay-ms=20]", "u1")
            await long_b.first.wait()
            long_a = Held(pool, "[standin:tokens=100] [standin:delay-ms=20]", "u2")
            await long_a.first.wait()
            assert {long_a.backend, long_b.backend} == {"a", "b"}
            waiting = Held(pool, "patient", "u3")
            await until(lambda: pool.scheduler.waiting == 1)
            assert not waiting.chunks
            victim = stands_by_name[long_a.backend]
            await asyncio.to_thread(victim.stop)
            await until(lambda: any(s.state is BackendHealth.DOWN for s in pool.status()))
            await waiting.task
            assert waiting.error is None and waiting.text.startswith("Echo: patient")
            survivor = "b" if long_a.backend == "a" else "a"
            assert waiting.chunks[-1].backend == survivor
            # New requests keep being served, by the survivor.
            for i in range(3):
                assert (await answer(pool, f"more {i}", user=f"v{i}"))[-1].backend == survivor
            # The stopped backend comes back and rejoins: both are used again.
            await asyncio.to_thread(victim.start)
            await until(lambda: all(s.state is BackendHealth.UP for s in pool.status()))
            answers = await asyncio.gather(*(answer(pool, f"again {i}", user=f"w{i}")
                                             for i in range(4)))
            assert {x[-1].backend for x in answers} == {"a", "b"}
            long_b.task.cancel()

    stands_by_name = {"a": a, "b": b}
    run(go())
    assert caplog.text.count("leaves the pool") == 1
    assert caplog.text.count("is back") == 1


def test_all_backends_down_is_unreachable_and_a_request_finds_them_back(standin: StandIn,
                                                                       ) -> None:
    async def go() -> None:
        async with pool_of(ollama("only", standin)) as pool:
            await asyncio.to_thread(standin.stop)
            with pytest.raises(ModelUnavailable) as err:
                await answer(pool, "anyone?")
            assert err.value.cause is Cause.UNREACHABLE
            assert pool.availability("llama3.2").state is ModelState.UNAVAILABLE
            assert not pool.ready
            await asyncio.to_thread(standin.start)
            # No waiting for the next probe: the request itself probes.
            assert (await answer(pool, "back?"))[-1].done

    run(go())


def test_a_backend_that_is_down_at_start_joins_when_it_comes_up(standin_factory) -> None:
    late, early = standin_factory(), standin_factory()
    late.stop()

    async def go() -> None:
        async with pool_of(ollama("late", late), openai("early", early)) as pool:
            states = {s.name: s.state for s in pool.status()}
            assert states == {"late": BackendHealth.DOWN, "early": BackendHealth.UP}
            assert pool.ready
            await asyncio.to_thread(late.start)
            await until(lambda: all(s.state is BackendHealth.UP for s in pool.status()))

    run(go())


def test_a_model_deleted_behind_the_pools_back_is_pulled_again(standin_factory) -> None:
    s = standin_factory()

    async def go() -> None:
        async with pool_of(ollama("gpu", s)) as pool:
            s.control(models=[])
            with pytest.raises(ModelUnavailable) as err:
                await answer(pool, "where is it?")
            assert err.value.cause is Cause.MISSING
            await until(lambda: pool.availability("llama3.2").state is ModelState.READY)
            assert (await answer(pool, "there it is"))[-1].done

    run(go())
    assert s.control()["models"] == ["llama3.2:latest"]


@pytest.mark.parametrize("kind", [ollama, openai])
def test_a_request_right_after_a_models_404_is_served_once_the_backend_lists_it_again(
        standin_factory, kind) -> None:
    # A 404 on one request makes the pool forget the model on that backend
    # until it is listed again; a request arriving in between re-checks the
    # list itself instead of being refused with "no backend serves it".
    s = standin_factory()

    async def go() -> None:
        async with pool_of(kind("gpu", s)) as pool:
            s.control(fault="status-404", fault_count=1)
            with pytest.raises(ModelError) as err:
                await answer(pool, "first")
            assert err.value.cause is Cause.MISSING
            assert (await answer(pool, "second"))[-1].done

    run(go())
    assert [r["fault"] for r in s.requests()][:1] == ["status-404"]
