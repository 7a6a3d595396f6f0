"""The model: streaming, conversation memory, pulling, every failure."""

from __future__ import annotations

import pytest
from chatcore.protocol import AnswerDelta, Cancel, ErrorCode, NoticeKind

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import TERMINATOR, OriginalV1Client, answer_text

from .clients import logged_in, wait_until


def test_v2_answer_streams_as_deltas_with_token_counts(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat("stream please [standin:tokens=30] [standin:delay-ms=5]")
    assert len(reply.deltas) > 1
    assert reply.text.startswith("Echo: stream please")
    assert reply.end is not None and reply.end.reason == "stop"
    assert reply.end.answer_tokens == 30
    assert reply.end.prompt_tokens > 0
    client.close()


def test_an_answer_that_arrives_at_once_goes_out_as_one_delta(live_server):
    # The whole answer, its done line and the end of the response come in one
    # read: the answer filter's held-back last word goes out in the same DELTA
    # as the rest (one frame and one write per answer, not two).
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat("all at once [standin:tokens=12] [standin:burst]")
    assert reply.end is not None and reply.end.reason == "stop"
    assert reply.end.answer_tokens == 12
    assert reply.text.startswith("Echo: all at once ")
    assert [d.text for d in reply.deltas] == [reply.text]
    client.close()


def test_a_stalled_model_ends_with_an_error_after_the_partial_answer(live_server):
    # The stand-in sends one token and then stalls far longer than the read
    # timeout: the user gets what was said, then a clear error.
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat("hi [standin:stall=30]")
    first = client.next_event(timeout=20)
    assert isinstance(first, AnswerDelta) and first.text.startswith("Echo")
    reply = client.collect(mid)
    assert reply.error is not None and reply.error.code is ErrorCode.MODEL_ERROR
    client.close()


def test_first_chunk_arrives_while_the_model_is_still_generating_v1(live_server):
    # Causal, not timed: when the first 64-byte chunk reaches the client, the
    # stand-in must still be generating (its request not finished).
    client = OriginalV1Client(live_server.port)
    client.login(USER, PASSWORD)
    client.send_frame("hi [standin:tokens=100] [standin:delay-ms=100]")
    first = client.read_chunk()
    assert first.startswith(b"Echo")
    requests = live_server.standin.requests()
    assert len(requests) == 1 and not requests[0].get("finished")
    chunks = [first]
    while chunks[-1] != TERMINATOR:
        chunks.append(client.read_chunk())
    assert len(answer_text(chunks).split()) >= 100
    client.close()


def test_first_delta_arrives_while_the_model_is_still_generating_v2(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat("hi [standin:tokens=100] [standin:delay-ms=100]")
    first = client.next_event()
    assert isinstance(first, AnswerDelta)
    requests = live_server.standin.requests()
    assert len(requests) == 1 and not requests[0].get("finished")
    reply = client.collect(mid)
    assert reply.end is not None
    client.close()


def test_conversation_history_is_sent_to_the_model(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.chat("my name is Ada", conversation="c1")
    client.chat("what is my name?", conversation="c1")
    client.chat("unrelated", conversation="c2")
    client.close()
    requests = live_server.standin.requests()
    second = [m["content"] for m in requests[1]["body"]["messages"] if m["role"] != "system"]
    assert second[0] == "my name is Ada"
    assert second[1].startswith("Echo: my name is Ada")
    assert second[2] == "what is my name?"
    third = [m["content"] for m in requests[2]["body"]["messages"] if m["role"] != "system"]
    assert third == ["unrelated"]


def test_history_is_trimmed_to_the_budget_and_the_user_is_told(server_factory):
    server = server_factory(CHAT_CONTEXT_TOKENS="60")
    client = logged_in(server.port, USER, PASSWORD)
    for i in range(4):
        client.chat(f"message number {i} " + "words " * 10, conversation="c")
    reply = client.chat("last one", conversation="c")
    assert any(n.kind is NoticeKind.CONTEXT_TRIMMED for n in reply.notices)
    client.close()
    sent = [m["content"] for m in server.standin.requests()[-1]["body"]["messages"]]
    assert sent[-1] == "last one"
    assert not any(c.startswith("message number 0") for c in sent)


def test_conversation_survives_a_reconnect(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.chat("remember pineapple", conversation="keep")
    client.close()
    client = logged_in(live_server.port, USER, PASSWORD)
    client.chat("what fruit?", conversation="keep")
    client.close()
    sent = [m["content"] for m in live_server.standin.requests()[-1]["body"]["messages"]]
    assert "remember pineapple" in sent


def test_missing_model_is_pulled_at_start_and_chat_waits_for_it(server_factory, standin):
    standin.control(models=[], pull_seconds=3)
    server = server_factory(wait_ready=False)
    client = logged_in(server.port, USER, PASSWORD)
    reply = client.chat("too early")
    assert reply.error is not None and reply.error.code is ErrorCode.MODEL_LOADING
    assert any(n.kind is NoticeKind.MODEL_LOADING for n in reply.notices)
    server.wait_for_log("model ready", timeout=30)
    assert "pulling" in server.log_text()
    assert client.chat("now").text.startswith("Echo: now")
    client.close()


@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("[standin:error-mid-stream]", ErrorCode.MODEL_ERROR),
        ("[standin:cut-mid-stream]", ErrorCode.MODEL_ERROR),
        ("[standin:no-done]", ErrorCode.MODEL_ERROR),
        ("[standin:status-404]", ErrorCode.MODEL_UNAVAILABLE),
        ("[standin:status-503]", ErrorCode.MODEL_UNAVAILABLE),
        ("[standin:status-500]", ErrorCode.MODEL_ERROR),
    ],
)
def test_model_failures_give_a_clear_error_and_the_server_keeps_serving(live_server, directive, code):
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat(f"hello {directive}")
    assert reply.error is not None, reply.events
    assert reply.error.code is code
    assert reply.error.message and "Traceback" not in reply.error.message
    assert client.chat("still there?").text.startswith("Echo: still there?")
    client.close()


def test_model_failure_over_v1_is_a_readable_line_and_terminator(live_server):
    client = OriginalV1Client(live_server.port)
    client.login(USER, PASSWORD)
    chunks = client.chat("hello [standin:error-mid-stream]")
    assert chunks[-1] == TERMINATOR
    assert "[ERROR] model_error" in answer_text(chunks)
    assert answer_text(client.chat("again")).startswith("Echo: again")
    client.close()


def test_model_service_down_then_back(live_server):
    standin = live_server.standin
    client = logged_in(live_server.port, USER, PASSWORD)
    standin.stop()
    try:
        reply = client.chat("anyone?")
        assert reply.error is not None and reply.error.code is ErrorCode.MODEL_UNAVAILABLE
    finally:
        standin.start()
    assert client.chat("back?").text.startswith("Echo: back?")
    client.close()


def test_v2_cancel_stops_the_answer_and_aborts_the_upstream_request(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat("long one [standin:tokens=400] [standin:delay-ms=50]")
    first = client.next_event()
    assert isinstance(first, AnswerDelta)
    client.send(Cancel(mid))
    reply = client.collect(mid)
    assert reply.end is not None and reply.end.reason == "cancelled"
    request = wait_until(lambda: [r for r in live_server.standin.requests() if r.get("finished")])
    assert request[0]["aborted_by_client"] is True
    client.close()
    history = live_server.history(USER)
    assert history[0]["status"] == "cancelled"
