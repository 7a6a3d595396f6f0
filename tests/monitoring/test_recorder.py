"""The metrics recorder in-process: label values only from enums, every
documented metric exposed, the gauges follow what happens, user names never
reach the exposition, the refusal window forgets and stays bounded."""

from __future__ import annotations

import asyncio

import pytest
from chat_server.metrics import (
    METRICS,
    OUTCOME_REASONS,
    BackendState,
    BackendView,
    LoginFailure,
    Metrics,
    Outcome,
    Protocol,
    Reason,
    RefusalWindow,
    RejectReason,
    Transport,
)
from chat_server.scheduler import FairScheduler
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def families(m: Metrics) -> dict[str, object]:
    text = generate_latest(m.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(m: Metrics, sample: str, **labels: str) -> float:
    text = generate_latest(m.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    raise KeyError((sample, labels))


def documented_family(doc_name: str, kind: str) -> str:
    # The text parser names counter families without their _total.
    return doc_name.removesuffix("_total") if kind == "counter" else doc_name


def test_every_documented_metric_is_exposed_from_the_start():
    m = Metrics(process_metrics=False)
    m.watch_backends(lambda: [BackendView("default", BackendState.STARTING)])
    exposed = families(m)
    for doc in METRICS:
        family = documented_family(doc.name, doc.kind)
        assert family in exposed, doc.name
        assert exposed[family].type == doc.kind, doc.name


def test_every_outcome_and_reason_pair_starts_at_zero():
    m = Metrics(process_metrics=False)
    for outcome, reasons in OUTCOME_REASONS.items():
        for reason in reasons:
            assert value(m, "chat_messages_total", outcome=outcome.value, reason=reason.value) == 0


@pytest.mark.parametrize("bad", ["alice", "v2", 1, None])
def test_a_label_value_that_is_not_an_enum_member_is_refused(bad):
    m = Metrics(process_metrics=False)
    with pytest.raises(TypeError):
        m.message_outcome(bad, Reason.NONE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        m.connection_rejected(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        m.login_failed(bad)  # type: ignore[arg-type]


def test_user_names_never_reach_the_exposition():
    m = Metrics(process_metrics=False)
    m.connection_opened("s1", Protocol.V2)
    m.login_succeeded("s1", "zed-the-user-name")
    m.message_received("s1")
    for _ in range(12):
        m.message_outcome(Outcome.REFUSED, Reason.BANNED_WORD, session="s1")
    text = generate_latest(m.registry).decode()
    assert "zed-the-user-name" not in text
    assert value(m, "chat_moderation_refusals_max_per_user") == 12
    # ... while the admin view, which is local-only, knows who it is.
    assert m.sessions["s1"].user == "zed-the-user-name" and m.sessions["s1"].refused == 12


def test_connections_and_logins_follow_open_login_close():
    m = Metrics(process_metrics=False)
    m.connection_opened("a", Protocol.V1)
    m.connection_opened("b", Protocol.V2, Transport.TLS)
    m.connection_opened("c", Protocol.V2)
    m.connection_opened("c", Protocol.V2)  # twice for one session counts once
    assert value(m, "chat_connections_open", protocol="v1", transport="plain") == 1
    assert value(m, "chat_connections_open", protocol="v2", transport="tls") == 1
    assert value(m, "chat_connections_total", protocol="v2", transport="plain") == 1
    m.login_succeeded("a", "bob")
    m.login_succeeded("b", "bob")
    m.login_succeeded("c", "carol")
    m.login_failed(LoginFailure.INVALID)
    m.login_failed(LoginFailure.THROTTLED)
    assert value(m, "chat_users_logged_in") == 2
    assert value(m, "chat_logins_total", result="success") == 3
    assert value(m, "chat_logins_total", result="failure") == 1
    assert value(m, "chat_logins_total", result="throttled") == 1
    m.connection_closed("a")
    assert value(m, "chat_users_logged_in") == 2  # bob still has session b
    m.connection_closed("b")
    m.connection_closed("never-opened")  # no protocol seen: nothing to undo
    assert value(m, "chat_users_logged_in") == 1
    assert value(m, "chat_connections_open", protocol="v1", transport="plain") == 0
    assert value(m, "chat_connections_total", protocol="v1", transport="plain") == 1
    assert set(m.sessions) == {"c"}
    m.connection_rejected(RejectReason.CONNECTION_LIMIT)
    assert value(m, "chat_connections_rejected_total", reason="connection_limit") == 1


def test_tokens_and_timings_are_counted():
    m = Metrics(process_metrics=False)
    m.tokens(prompt=12, answer=30)
    m.tokens(prompt=0, answer=0)
    m.answer_timing(0.2, 1.5)
    m.answer_timing(None, None)  # no text sent, not complete: nothing to observe
    assert value(m, "chat_prompt_tokens_total") == 12
    assert value(m, "chat_answer_tokens_total") == 30
    assert value(m, "chat_first_token_seconds_count") == 1
    assert value(m, "chat_first_token_seconds_bucket", le="0.25") == 1
    assert value(m, "chat_first_token_seconds_bucket", le="0.1") == 0
    assert value(m, "chat_answer_duration_seconds_sum") == pytest.approx(1.5)


def test_refusal_window_reports_the_top_user_and_forgets_old_refusals():
    now = [1000.0]
    window = RefusalWindow(300, clock=lambda: now[0])
    for _ in range(3):
        window.record("a")
    now[0] += 200
    for _ in range(5):
        window.record("b")
    window.record("a")
    assert window.max_count() == 5
    assert window.count("a") == 4
    now[0] += 150  # a's first three are older than 300 s now
    assert window.count("a") == 1
    assert window.max_count() == 5
    now[0] += 200
    assert window.max_count() == 0


def test_refusal_window_memory_is_bounded():
    window = RefusalWindow(300, max_users=100, cap=10)
    for i in range(1000):
        window.record(f"user{i}")
    for _ in range(50):
        window.record("user999")
    assert len(window) == 100  # the oldest users went first
    assert window.count("user0") == 0
    assert window.max_count() == 10  # capped per user


def test_generation_slot_counts_waiting_and_generating():
    async def scenario():
        m = Metrics(process_metrics=False)
        scheduler = FairScheduler(1)
        release = asyncio.Event()
        inside = asyncio.Event()

        async def generate(user: str) -> None:
            async with m.generation_slot(scheduler.slot(user)):
                inside.set()
                await release.wait()

        first = asyncio.create_task(generate("a"))
        await inside.wait()
        second = asyncio.create_task(generate("b"))
        third = asyncio.create_task(generate("c"))
        await asyncio.sleep(0.05)
        seen = (m.queue_length, m.in_flight, value(m, "chat_queue_length"),
                value(m, "chat_generations_in_flight"))
        third.cancel()  # a waiter that gives up leaves the queue
        await asyncio.sleep(0)
        after_cancel = m.queue_length
        release.set()
        await asyncio.gather(first, second, return_exceptions=True)
        with pytest.raises(asyncio.CancelledError):
            await third
        return m, seen, after_cancel, scheduler

    m, seen, after_cancel, scheduler = asyncio.run(scenario())
    assert seen == (2, 1, 2, 1)
    assert after_cancel == 1
    assert (m.queue_length, m.in_flight) == (0, 0)
    assert value(m, "chat_queue_length") == 0 and value(m, "chat_generations_in_flight") == 0
    assert value(m, "chat_queue_wait_seconds_count") == 2  # the cancelled one never got a slot
    assert scheduler.in_flight == 0 and scheduler.waiting == 0


def test_generation_slot_releases_the_slot_when_the_generation_fails():
    async def scenario():
        m = Metrics(process_metrics=False)
        scheduler = FairScheduler(1)
        with pytest.raises(RuntimeError):
            async with m.generation_slot(scheduler.slot("a")):
                raise RuntimeError("model broke")
        return m, scheduler

    m, scheduler = asyncio.run(scenario())
    assert m.in_flight == 0 and scheduler.in_flight == 0


def test_store_write_times_successes_and_counts_errors():
    m = Metrics(process_metrics=False)
    with m.store_write():
        pass
    with pytest.raises(OSError), m.store_write():
        raise OSError("disk full")
    assert value(m, "chat_store_writes_total", result="ok") == 1
    assert value(m, "chat_store_writes_total", result="error") == 1
    assert value(m, "chat_store_write_seconds_count") == 2


def test_backend_states_come_from_the_watched_source():
    m = Metrics(process_metrics=False)
    states = {"gpu1": "ready", "gpu2": "unavailable"}
    m.watch_backends(lambda: [BackendView(n, BackendState.parse(s)) for n, s in states.items()])
    assert value(m, "chat_backend_up", backend="gpu1") == 1
    assert value(m, "chat_backend_up", backend="gpu2") == 0
    assert value(m, "chat_backend_state", backend="gpu2", state="unavailable") == 1
    assert value(m, "chat_backend_state", backend="gpu2", state="ready") == 0
    states["gpu2"] = "pulling"
    assert value(m, "chat_backend_state", backend="gpu2", state="pulling") == 1


def test_backend_names_are_checked_and_capped():
    m = Metrics(process_metrics=False)
    names = ["ok-1", "bad name\n", *(f"b{i}" for i in range(100))]
    m.watch_backends(lambda: [BackendView(n, BackendState.READY) for n in names])
    labels = {s.labels["backend"] for f in families(m).values() for s in f.samples
              if s.name == "chat_backend_up"}
    assert "bad name\n" not in labels and "invalid" in labels
    assert "other" in labels and len(labels) <= 66


def test_a_failing_backend_source_does_not_break_the_scrape():
    m = Metrics(process_metrics=False)

    def broken() -> list[BackendView]:
        raise RuntimeError("boom")

    m.watch_backends(broken)
    assert "chat_messages" in families(m)


def test_counts_sum_outcomes_and_logins():
    m = Metrics(process_metrics=False)
    m.message_outcome(Outcome.FAILED, Reason.MODEL_ERROR)
    m.message_outcome(Outcome.FAILED, Reason.MODEL_UNAVAILABLE)
    m.message_outcome(Outcome.ANSWERED)
    m.login_failed(LoginFailure.INVALID)
    counts = m.counts()
    assert counts["messages"]["failed"] == 2 and counts["messages"]["answered"] == 1
    assert counts["logins"] == {"success": 0, "failure": 1, "throttled": 0}


def test_backend_states_are_read_on_the_event_loop_and_a_stalled_loop_never_stalls_a_scrape():
    import threading

    m = Metrics(process_metrics=False)
    threads: list[int] = []
    stall = threading.Event()
    loop = asyncio.new_event_loop()

    def source() -> list[BackendView]:
        threads.append(threading.get_ident())
        return [BackendView("gpu1", BackendState.READY)]

    async def watch() -> None:
        m.watch_backends(source)

    loop.run_until_complete(watch())
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        assert value(m, "chat_backend_up", backend="gpu1") == 1
        assert threads == [runner.ident]  # the source ran on the loop, not in the scrape
        loop.call_soon_threadsafe(stall.wait, 60)  # the loop is busy (blocked)
        assert value(m, "chat_backend_up", backend="gpu1") == 1  # the last known state...
        assert not stall.is_set() and len(threads) == 1  # ...given while the loop still stalls
    finally:
        stall.set()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
