"""
Cancellation safety (as httpcore's): an answer stopped at any phase, by the
user's CANCEL, by the client going away, by a timeout to the first token or
by a failover, gives back its model slot exactly once, closes its request to
the model service (which sees the client hang up), and leaks nothing: the
server's own gauges (``chat_generations_in_flight``, ``chat_queue_length``)
return to zero and, with one slot per backend, the next answer is served
(a slot that leaked would make it wait for ever).

Real server processes and the Ollama API stand-in, over both backend kinds
(the official ``ollama`` and ``openai`` clients). Observed only through
public things: the metrics endpoint, the stand-in's request log, the wire.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chatcore.protocol import AnswerDelta, AnswerEnd, Cancel, Error, ErrorCode, Notice, NoticeKind

from tests.fixtures.server import PASSWORD, LiveServer
from tests.fixtures.standin import StandIn
from tests.fixtures.v1client import OriginalV1Client
from tests.server.clients import V2Client, logged_in, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

_METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
USERS = {"alice": PASSWORD, "bob": PASSWORD}
#: Phases an answer can be stopped in, and the message that puts it there.
SLOW = "[standin:tokens=400] [standin:delay-ms=25]"
PHASES = {
    "waiting in the user's line": SLOW,
    "waiting for a model slot": SLOW,
    "before the response head": "[standin:hang=30]",
    "mid-stream": SLOW,
    "stalled mid-stream": "[standin:stall=30]",
}


class Watched:
    """A server with one model slot, its metrics and its stand-in."""

    def __init__(self, server: LiveServer, standin: StandIn) -> None:
        self.server, self.standin = server, standin
        m = server.wait_for_log(_METRICS_LINE)
        self.metrics_url = f"http://127.0.0.1:{m.group(2)}/metrics"

    def gauge(self, name: str) -> float:
        with _OPENER.open(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, name
        return float(found.group(1))

    def settled(self) -> list[dict[str, Any]]:
        """Wait until nothing holds or waits for a slot and every request to the
        model service has ended; return the stand-in's request log."""
        wait_until(lambda: self.gauge("chat_generations_in_flight") == 0
                   and self.gauge("chat_queue_length") == 0, timeout=20)
        return wait_until(lambda: (reqs := self.standin.requests())
                          and all(r["finished"] is not None for r in reqs) and reqs, timeout=20)


@pytest.fixture(scope="module", params=["ollama", "openai"])
def watched(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    from tests.fixtures.server import make_server_env

    standin = StandIn().start()
    d = tmp_path_factory.mktemp(f"cancel-{request.param}")
    url = standin.url if request.param == "ollama" else standin.openai_url
    server = LiveServer(
        env=make_server_env(d, standin.url, CHAT_RATE_LIMIT="0", CHAT_METRICS_PORT="0",
                            CHAT_BACKENDS=f"only={request.param}:{url}",
                            CHAT_BACKEND_ONLY_PARALLEL="1"),
        log_path=d / "server.log", standin=standin,
    )
    for name, password in USERS.items():
        server.add_user(name, password)
    server.start()
    try:
        yield Watched(server, standin)
    finally:
        server.stop()
        standin.stop()


def _first(client: V2Client, mid: int, what: Callable[[Any], bool]) -> None:
    client.collect(mid, until=what)


def _is_delta(e: Any) -> bool:
    return isinstance(e, AnswerDelta)


def _queued(e: Any) -> bool:
    return isinstance(e, Notice) and e.kind is NoticeKind.QUEUE


def _put_in_phase(w: Watched, phase: str, client: V2Client | None,
                  v1: OriginalV1Client | None) -> tuple[int, list[V2Client]]:
    """Start alice's answer and wait until it is in ``phase``; return its id and
    the other connections that keep it there (to be ended afterwards)."""
    others: list[V2Client] = []
    if phase == "waiting in the user's line":
        holder = logged_in(w.server.port, "alice", PASSWORD)
        _first(holder, holder.start_chat(f"{SLOW} holder"), _is_delta)
        others.append(holder)
    elif phase == "waiting for a model slot":
        holder = logged_in(w.server.port, "bob", PASSWORD)
        _first(holder, holder.start_chat(f"{SLOW} holder"), _is_delta)
        others.append(holder)
    text = f"{PHASES[phase]} the answer to stop"
    if v1 is not None:
        v1.send_frame(text)
        mid = 0
    else:
        assert client is not None
        mid = client.start_chat(text)
    if phase in ("mid-stream", "stalled mid-stream") and client is not None:
        _first(client, mid, _is_delta)
    elif phase in ("mid-stream", "stalled mid-stream", "before the response head"):
        # (v1 sends whole 64-byte chunks only: the stand-in says when text went out.)
        sent = 0 if phase == "before the response head" else 1
        wait_until(lambda: any("the answer to stop" in str(r["body"]) and r["finished"] is None
                               and r["tokens_sent"] >= sent for r in w.standin.requests()))
    elif client is not None:
        _first(client, mid, _queued)
    else:
        wait_until(lambda: w.gauge("chat_queue_length") == 1 or phase.endswith("line"))
    return mid, others


def _check_free(w: Watched) -> None:
    """Gauges at zero, every request to the model ended (the stopped ones by
    our hang-up), and the one slot serves the next answer."""
    reqs = w.settled()
    for r in reqs:
        if "the answer to stop" in str(r["body"]) or "holder" in str(r["body"]):
            assert r["aborted_by_client"], r
    with _Closing(logged_in(w.server.port, "bob", PASSWORD)) as bob:
        reply = bob.chat("are you free?")
        assert isinstance(reply.end, AnswerEnd) and "Echo: are you free?" in reply.text, reply.events
    w.standin.reset()


class _Closing:
    def __init__(self, client: V2Client) -> None:
        self.client = client

    def __enter__(self) -> V2Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_cancel_in_any_phase_gives_the_slot_back_and_hangs_up_on_the_model(
        watched: Watched, phase: str) -> None:
    with _Closing(logged_in(watched.server.port, "alice", PASSWORD)) as alice:
        mid, others = _put_in_phase(watched, phase, alice, None)
        alice.send(Cancel(mid))
        reply = alice.collect(mid)
        assert isinstance(reply.events[-1], AnswerEnd), reply.events
        assert reply.events[-1].reason == "cancelled"
        for other in others:
            other.send(Cancel(other.next_id - 1))
            other.collect(other.next_id - 1)
            other.close()
        # The session goes on: the same connection is answered again.
        again = alice.chat("and now?")
        assert isinstance(again.end, AnswerEnd) and "Echo: and now?" in again.text
    _check_free(watched)


# (v1 in the user's line is left out: a v1 client sees no queue notice, so
# nothing would tell that the phase was reached.)
@pytest.mark.parametrize(("phase", "version"), [
    (phase, version) for phase in PHASES for version in ("v1", "v2")
    if (phase, version) != ("waiting in the user's line", "v1")])
def test_a_client_gone_in_any_phase_gives_the_slot_back_and_hangs_up_on_the_model(
        watched: Watched, phase: str, version: str) -> None:
    if version == "v1":
        v1 = OriginalV1Client(watched.server.port)
        assert v1.login("alice", PASSWORD)[1].strip() == b"password accepted"
        _, others = _put_in_phase(watched, phase, None, v1)
        v1.close()
    else:
        alice = logged_in(watched.server.port, "alice", PASSWORD)
        _, others = _put_in_phase(watched, phase, alice, None)
        alice.close()
    for other in others:
        other.close()
    _check_free(watched)


def test_a_timeout_to_the_first_token_fails_over_and_frees_both_slots(
        server_factory, standin_factory) -> None:
    hung, good = standin_factory(), standin_factory()
    hung.control(fault="hang=30")
    server = server_factory(users=USERS, CHAT_METRICS_PORT="0", CHAT_MODEL_READ_TIMEOUT="1",
                            CHAT_BACKENDS=f"hung=ollama:{hung.url},good=openai:{good.openai_url}",
                            CHAT_BACKEND_HUNG_PARALLEL="1", CHAT_BACKEND_GOOD_PARALLEL="1")
    w = Watched(server, hung)
    with _Closing(logged_in(server.port, "alice", PASSWORD)) as alice:
        # Least recently granted first: over two answers, one starts on each.
        for n in range(2):
            reply = alice.chat(f"question {n}")
            assert isinstance(reply.end, AnswerEnd) and f"Echo: question {n}" in reply.text
    reqs = w.settled()
    assert reqs and all(r["aborted_by_client"] for r in reqs), reqs
    # With the hung backend alone, the timeout ends the answer clearly, and frees the slot.
    server2 = server_factory(users=USERS, CHAT_METRICS_PORT="0", CHAT_MODEL_READ_TIMEOUT="1",
                             CHAT_BACKENDS=f"hung=ollama:{hung.url}", CHAT_BACKEND_HUNG_PARALLEL="1")
    w2 = Watched(server2, hung)
    with _Closing(logged_in(server2.port, "alice", PASSWORD)) as alice:
        for _ in range(2):  # the second would wait for ever behind a leaked slot
            reply = alice.chat("anyone?")
            assert isinstance(reply.error, Error) and reply.error.code is ErrorCode.MODEL_ERROR
    assert all(r["aborted_by_client"] for r in w2.settled())


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_model_that_sends_bytes_but_no_text_cannot_hold_the_slot(
        server_factory, standin_factory, kind: str) -> None:
    # Keep-alive bytes every 0.1 s for 30 s: httpx's read timeout never fires;
    # the per-line deadline (CHAT_MODEL_READ_TIMEOUT) ends the answer.
    standin = standin_factory()
    url = standin.url if kind == "ollama" else standin.openai_url
    server = server_factory(users=USERS, CHAT_METRICS_PORT="0", CHAT_MODEL_READ_TIMEOUT="1",
                            CHAT_BACKENDS=f"only={kind}:{url}", CHAT_BACKEND_ONLY_PARALLEL="1")
    w = Watched(server, standin)
    with _Closing(logged_in(server.port, "alice", PASSWORD)) as alice:
        reply = alice.chat("[standin:trickle=30] the answer to stop")
        assert reply.text.startswith("Echo:"), reply.events
        assert isinstance(reply.error, Error) and reply.error.code is ErrorCode.MODEL_ERROR
        assert "took too long" in reply.error.message
    _check_free(w)


def test_a_shutdown_stops_answers_in_every_phase_and_exits_within_its_grace(
        server_factory, standin) -> None:
    # Upstreams that would hang or stall for two minutes, a long answer, and one
    # waiting for a slot: after the 1 s grace every one is stopped and told, and
    # the process exits by itself (stop() kills it after 30 s: exit code -9).
    users = {name: PASSWORD for name in ("alice", "bob", "carol", "dave")}
    server = server_factory(users=users, CHAT_MAX_PARALLEL="3", CHAT_SHUTDOWN_GRACE="1")
    clients = {name: logged_in(server.port, name, PASSWORD) for name in users}
    texts = {"alice": "[standin:hang=120]", "bob": "[standin:stall=120]",
             "carol": "[standin:tokens=4000] [standin:delay-ms=25]",
             "dave": "[standin:tokens=4000] [standin:delay-ms=25]"}
    mids = {}
    for name in ("alice", "bob", "carol"):
        mids[name] = clients[name].start_chat(f"{texts[name]} the answer to stop")
    wait_until(lambda: any("hang" in str(r["body"]) and r["finished"] is None
                           for r in standin.requests()))
    for name in ("bob", "carol"):
        _first(clients[name], mids[name], _is_delta)
    mids["dave"] = clients["dave"].start_chat(f"{texts['dave']} queued")
    _first(clients["dave"], mids["dave"], _queued)
    assert server.stop(timeout=30) == 0
    for name, client in clients.items():
        reply = client.collect(mids[name])
        final = reply.events[-1]
        assert (isinstance(final, AnswerEnd) and final.reason == "cancelled") or (
            isinstance(final, Error) and final.code is ErrorCode.SHUTTING_DOWN), (name, final)
        client.close()
    reqs = standin.requests()
    assert len(reqs) == 3 and all(r["aborted_by_client"] for r in reqs), reqs
