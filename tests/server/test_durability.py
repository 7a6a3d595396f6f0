"""Durability: every turn is stored as it completes; SIGTERM lets answers in flight
finish, stores them and exits 0; nothing acknowledged is lost."""

from __future__ import annotations

import signal
import threading

from chatcore.protocol import AnswerDelta, AnswerEnd, ConnectionClosed, Error, ErrorCode, Notice

from tests.fixtures.server import PASSWORD, USER

from .clients import logged_in


def test_every_turn_is_stored_with_text_model_tokens_and_times(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    reply = client.chat("store me [standin:tokens=12]", conversation="conv-1")
    client.close()
    [turn] = live_server.history(USER)
    assert turn["user"] == "store me [standin:tokens=12]"
    assert turn["answer"] == reply.text
    assert turn["model"] == "llama3.2"
    assert turn["conversation"] == "conv-1"
    assert turn["answer_tokens"] == 12 and turn["prompt_tokens"] > 0
    assert turn["status"] == "complete"
    assert turn["created_at"] <= turn["completed_at"]


def test_sigterm_lets_the_answer_in_flight_finish_and_stores_it(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    mid = client.start_chat("finish me [standin:tokens=40] [standin:delay-ms=50]")
    assert isinstance(client.next_event(), AnswerDelta)
    exit_code: list[int | None] = []
    stopper = threading.Thread(target=lambda: exit_code.append(live_server.stop(signal.SIGTERM)))
    stopper.start()
    reply = client.collect(mid)
    assert reply.end is not None and reply.end.reason == "stop"
    stopper.join(timeout=30)
    assert exit_code == [0]
    client.close()
    [turn] = live_server.history(USER)
    assert turn["status"] == "complete" and turn["answer_tokens"] == 40


def test_a_chat_sent_during_the_shutdown_while_an_answer_runs_is_busy_and_the_answer_finishes(
        live_server):
    # One answer per connection, always (docs/PROTOCOL.md §6): a CHAT before the
    # END gets busy, also once SIGTERM has come, and the answer in flight still
    # ends with its END; only then is the session told to reconnect.
    client = logged_in(live_server.port, USER, PASSWORD)
    first = client.start_chat("finish me [standin:tokens=60] [standin:delay-ms=50]")
    assert isinstance(client.next_event(), AnswerDelta)
    stopper = threading.Thread(target=live_server.stop, args=(signal.SIGTERM,))
    stopper.start()
    live_server.wait_for_log("waiting for 1 answers in flight")
    second = client.start_chat("and this")
    events = []
    while not isinstance(event := client.next_event(timeout=30), ConnectionClosed):
        events.append(event)
    stopper.join(timeout=30)
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.code, e.message_id) for e in errors] == [
        (ErrorCode.BUSY, second), (ErrorCode.SHUTTING_DOWN, None)], events
    ends = [e for e in events if isinstance(e, AnswerEnd)]
    assert [(e.message_id, e.reason) for e in ends] == [(first, "stop")], events
    assert events.index(ends[0]) < events.index(errors[1])
    client.close()


def test_sigterm_deadline_stores_the_unfinished_answer_as_interrupted(server_factory):
    server = server_factory(CHAT_SHUTDOWN_GRACE="1")
    client = logged_in(server.port, USER, PASSWORD)
    mid = client.start_chat("too long [standin:tokens=400] [standin:delay-ms=50]")
    assert isinstance(client.next_event(), AnswerDelta)
    assert server.stop(signal.SIGTERM) == 0
    reply = client.collect(mid)
    assert isinstance(reply.events[-1], (AnswerEnd, Error))
    [turn] = server.history(USER)
    assert turn["status"] == "interrupted"
    assert turn["user"].startswith("too long")
    assert turn["answer"].startswith("Echo: too long")


def test_sigterm_deadline_tells_a_queued_message_to_come_back_and_stores_it(server_factory):
    server = server_factory(users={USER: PASSWORD, "bob": "bob's password"},
                            CHAT_SHUTDOWN_GRACE="1", CHAT_MAX_PARALLEL="1")
    bob = logged_in(server.port, "bob", "bob's password")
    bob.start_chat("hold the slot [standin:tokens=400] [standin:delay-ms=50]")
    assert isinstance(bob.next_event(), AnswerDelta)
    client = logged_in(server.port, USER, PASSWORD)
    mid = client.start_chat("queued")
    assert isinstance(client.next_event(), Notice)  # waiting for the slot
    assert server.stop(signal.SIGTERM) == 0
    reply = client.collect(mid)
    error = reply.events[-1]
    assert isinstance(error, Error) and error.code is ErrorCode.SHUTTING_DOWN
    assert error.message_id == mid
    [turn] = server.history(USER)
    assert (turn["user"], turn["status"], turn["answer"]) == ("queued", "interrupted", "")
    assert len(server.standin.requests()) == 1  # it never reached the model


def test_a_message_sent_again_after_shutdown_replaces_its_unanswered_turn(server_factory):
    # The sequel of the test above: the client sends the message again, as
    # docs/PROTOCOL.md lets it, to the restarted server. The history then holds
    # the question once, answered; the unanswered attempt is gone.
    server = server_factory(users={USER: PASSWORD, "bob": "bob's password"},
                            CHAT_SHUTDOWN_GRACE="1", CHAT_MAX_PARALLEL="1")
    client = logged_in(server.port, USER, PASSWORD)
    before = client.chat("before", conversation="c").text
    bob = logged_in(server.port, "bob", "bob's password")
    bob.start_chat("hold the slot [standin:tokens=400] [standin:delay-ms=50]")
    assert isinstance(bob.next_event(), AnswerDelta)
    mid = client.start_chat("queued", conversation="c")
    assert isinstance(client.next_event(), Notice)
    assert server.stop(signal.SIGTERM) == 0
    assert client.collect(mid).events[-1].code is ErrorCode.SHUTTING_DOWN
    assert [t["status"] for t in server.history(USER)] == ["complete", "interrupted"]
    server.start()
    client = logged_in(server.port, USER, PASSWORD)
    reply = client.chat("queued", conversation="c")
    assert reply.end is not None
    turns = server.history(USER)
    assert [(t["user"], t["status"], t["answer"]) for t in turns] == [
        ("before", "complete", before), ("queued", "complete", reply.text)]
    # The same text once more is a new question: both answers stay.
    client.chat("queued", conversation="c")
    assert [t["user"] for t in server.history(USER)] == ["before", "queued", "queued"]


def test_history_survives_a_restart(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    client.chat("before restart")
    client.close()
    live_server.restart()
    client = logged_in(live_server.port, USER, PASSWORD)
    client.chat("after restart")
    client.close()
    assert [t["user"] for t in live_server.history(USER)] == ["before restart", "after restart"]
