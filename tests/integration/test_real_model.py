"""
A real model through the whole stack: the compose stack with llama.cpp's
server (docker-compose.llamacpp.yml) in place of Ollama, serving the tiny
SmolLM2-135M-Instruct (docs/ENGINES.md), chatted with over v2 (chat-client's
one-shot mode and its library) and over v1 (the original client's bytes).

How the stack is set up, and why:

* **llama.cpp instead of Ollama** (``OLLAMA_REPLICAS=0``, one ``openai``
  backend, the tiny model the default): v1 clients always get the default
  model, so it must be the real one; and no Ollama stand-in is started.
* **Temperature 0** (``LLAMACPP_TEMPERATURE``): llama.cpp takes the likeliest
  token every time, so a given conversation gets the same answer on every
  run. The assertions are about properties of the answers (accented letters, a
  masked address, a length cap), and those properties are then a fact about
  this model and prompt, not a matter of luck: sampled at llama.cpp's default
  temperature, the model writes the e-mail address asked for below about one
  time in three, and accents in two French answers out of three.
* **At most** :data:`MAX_TOKENS` **tokens per answer**
  (``LLAMACPP_N_PREDICT``): a greedy 135M model can repeat itself until
  stopped, so the cap bounds the suite's time, and it gives the long prompt a
  known end (``reason: length`` with exactly that many tokens).
* One CPU thread (docs/ENGINES.md explains why), a healthcheck every second.

Each test uses a conversation of its own (the model sees a conversation's
earlier turns, which would change its answers). Timing is never asserted in
seconds: streaming is judged by when the first piece arrives relative to the
whole answer, and the cancel by how many tokens llama.cpp produced.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from anyascii import anyascii
from chat_client.connection import ChatConnection
from chat_client.turn import TurnOutcome, run_turn
from chatcore.privacy import EMAIL_MASK, find_personal_data
from chatcore.protocol import NoticeKind

from tests.fixtures.engines import missing_engine
from tests.fixtures.llamacpp import MODEL_ALIAS, compose_overlay_env, require_engine
from tests.fixtures.v1client import (
    DISCONNECTED,
    PASSWORD_ACCEPTED,
    USERNAME_ACCEPTED,
    OriginalV1Client,
    answer_text,
)

from .conftest import (
    COMMAND_TIMEOUT,
    Stack,
    compose_stack,
    docker_problem,
    free_port,
    local_base_image,
)

pytestmark = [pytest.mark.integration, pytest.mark.realmodel, pytest.mark.timeout(600)]

FILES = ["docker-compose.yml", "docker-compose.test.yml", "docker-compose.llamacpp.yml"]
#: The backend's name in CHAT_BACKENDS (END and the export report it).
BACKEND = "llamacpp"
#: The most tokens llama.cpp writes for one answer (LLAMACPP_N_PREDICT).
MAX_TOKENS = 96

#: A prompt the model answers at length: it runs into the MAX_TOKENS cap.
LONG = "Tell me a very long story about a brave knight, with many chapters."
#: Prompts in French. With temperature 0 the first is answered "Ce qu'un forêt
#: est une forête." (measured with llama.cpp build 11669); the others are there
#: so that a different build, whose likeliest words differ a little, still has
#: accented letters to show.
FRENCH = [
    "Réponds en français : qu'est-ce qu'une forêt ?",
    "Écris une phrase en français sur l'été.",
    "Translate into French: The coffee is very hot and the tea is cold.",
]
#: Prompts that make the model write an e-mail address of its own (a user's
#: message may not contain one: client and server refuse it). With temperature
#: 0 the first is answered "Alice's e-mail address is: alice@example.com";
#: the second, "A classic example of a Gmail e-mail address is:
#: "john@example.com"", is the fallback of another build.
EMAIL = [
    "Alice's user name is alice and her company's domain is example.com. "
    "What is Alice's e-mail address?",
    "Give one example of a Gmail e-mail address.",
]
#: Printable ASCII plus newline and tab: what the server sends a v1 client.
V1_CLEAN = re.compile(rb"[\x20-\x7e\n\t]*")


def stack_settings(project: str, user: str, password: str) -> dict[str, str]:
    return {
        "COMPOSE_PROJECT_NAME": project,
        "CHAT_PORT": str(free_port()),
        # Published on loopback only: tests talk to 127.0.0.1 and nothing else.
        "CHAT_BIND_ADDRESS": "127.0.0.1",
        "CHAT_BOOTSTRAP_USER": user,
        "CHAT_BOOTSTRAP_PASSWORD": password,
        **local_base_image(),
        # The local llama.cpp image and the tiny model (docs/ENGINES.md).
        **compose_overlay_env(),
        # llama.cpp instead of Ollama, its model the only one and the default.
        "OLLAMA_REPLICAS": "0",
        "CHAT_BACKENDS": f"{BACKEND}=openai:http://llamacpp:8080/v1",
        "CHAT_MODEL": MODEL_ALIAS,
        "CHAT_MODELS": MODEL_ALIAS,
        "LLAMACPP_TEMPERATURE": "0",
        "LLAMACPP_N_PREDICT": str(MAX_TOKENS),
        "LLAMACPP_HEALTH_INTERVAL": "1s",
    }


@pytest.fixture(scope="module")
def real_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    require_engine()  # the local llama.cpp image and the model file
    project = f"chatreal-{uuid.uuid4().hex[:10]}"
    user, password = "it-admin", secrets.token_urlsafe(18)
    values = stack_settings(project, user, password)
    started = time.monotonic()
    with compose_stack(request, files=FILES, values=values, user=user, password=password,
                       build_client=False) as st:
        print(f"\n[real model] stack up in {time.monotonic() - started:.1f} s")
        yield st


# -- llama-server, seen from inside its container ----------------------------------------


class Llama:
    """llama-server's own view: /slots (what each slot is doing) and /metrics
    (tokens generated so far). It is not published; curl runs in its container."""

    def __init__(self, stack: Stack) -> None:
        self.container = stack.container_id("llamacpp")

    def get(self, path: str) -> str:
        r = subprocess.run(["docker", "exec", self.container, "curl", "-fsS",
                            f"http://localhost:8080{path}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"GET {path} in llamacpp: {r.stderr}"
        return r.stdout

    def slots(self) -> list[dict[str, Any]]:
        slots: list[dict[str, Any]] = json.loads(self.get("/slots"))
        return slots

    def busy(self) -> bool:
        return any(s["is_processing"] for s in self.slots())

    def metrics(self) -> dict[str, float]:
        """llama-server's counters (``llamacpp:NAME`` in /metrics) by NAME."""
        values = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("llamacpp:"):
                name, value = line.split()
                values[name.removeprefix("llamacpp:")] = float(value)
        return values

    def tokens_predicted(self) -> int:
        """Tokens generated since llama-server started (counted as each request ends)."""
        return int(self.metrics()["tokens_predicted_total"])

    def prompt_tokens(self) -> int:
        """Prompt tokens read since llama-server started: those it processed
        and those it found in its cache (a shared beginning, like the system
        prompt)."""
        m = self.metrics()
        return int(m["prompt_tokens_total"] + m["prompt_tokens_cached_total"])

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout  # a hang guard, not a timing check
        while self.busy():
            assert time.monotonic() < deadline, f"llama-server still busy after {timeout} s"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def llama(real_stack: Stack) -> Llama:
    return Llama(real_stack)


# -- the clients --------------------------------------------------------------------------


@dataclass
class Turn:
    """One answer through chat-client's library, with the arrival of each piece."""

    outcome: TurnOutcome
    conversation: str
    sent: float
    arrivals: list[float] = field(default_factory=list)
    cancelled_at: float | None = None

    @property
    def text(self) -> str:
        return self.outcome.text


def connect(stack: Stack) -> ChatConnection:
    conn = ChatConnection.connect(stack.host, stack.port, timeout=30)
    conn.handshake()
    conn.login(stack.user, stack.password)
    return conn


def library_turn(stack: Stack, text: str, *, conversation: str | None = None,
                 cancel_after: int | None = None, conn: ChatConnection | None = None) -> Turn:
    """Send ``text`` in a new conversation (or ``conversation``) and follow its
    answer; with ``cancel_after=n``, CANCEL once ``n`` pieces have arrived."""
    own = conn is None
    conn = conn or connect(stack)
    turn = Turn(TurnOutcome(0), conversation or uuid.uuid4().hex, time.monotonic())

    def on_delta(_: str) -> None:
        turn.arrivals.append(time.monotonic())

    def interrupted() -> bool:
        if cancel_after is not None and len(turn.arrivals) >= cancel_after:
            if turn.cancelled_at is None:
                turn.cancelled_at = time.monotonic()
            return True
        return False

    try:
        turn.outcome = run_turn(conn, text, conversation=turn.conversation, timeout=120, on_delta=on_delta, interrupted=interrupted)
    finally:
        if own:
            conn.close()
    assert turn.outcome.failure is None and turn.outcome.error is None, turn.outcome
    return turn


def one_shot(stack: Stack, text: str) -> str:
    """``chat-client --message TEXT`` from the host, as a user runs it in a
    UTF-8 terminal; its standard output must be UTF-8."""
    exe = Path(sys.executable).with_name("chat-client")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "chat_client"]
    env = {**os.environ, "CHAT_SERVER_HOST": stack.host, "CHAT_SERVER_PORT": str(stack.port),
           "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([*cmd, "--user", stack.user, "--password-stdin", "--message", text],
                       input=(stack.password + "\n").encode(), env=env, capture_output=True,
                       timeout=COMMAND_TIMEOUT)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode("utf-8")  # strict: an invalid byte fails the test


def exported(stack: Stack) -> list[dict[str, Any]]:
    return stack.history(stack.user)


def non_ascii_letters(text: str) -> str:
    return "".join(c for c in text if ord(c) > 127 and c.isalpha())


# -- the tests ----------------------------------------------------------------------------


def test_the_stack_offers_the_tiny_model_from_llamacpp_alone(real_stack: Stack) -> None:
    conn = connect(real_stack)
    try:
        assert conn.model == MODEL_ALIAS and conn.models == (MODEL_ALIAS,)
        assert conn.hello is not None and conn.hello.limits["model_ready"] == 1
    finally:
        conn.close()
    services = real_stack.compose("ps", "--format", "{{.Service}}").stdout.split()
    assert sorted(services) == ["llamacpp", "server"]  # no Ollama at all


def test_one_shot_client_prints_the_models_answer_as_utf8(real_stack: Stack) -> None:
    answers = [one_shot(real_stack, prompt).strip() for prompt in FRENCH]
    assert all(answers), answers
    # UTF-8 end to end: the model's accented letters arrive as they were written.
    assert any(non_ascii_letters(a) for a in answers), answers


def test_library_client_streams_the_answer_with_llamacpps_token_counts(
        real_stack: Stack, llama: Llama) -> None:
    before = llama.tokens_predicted(), llama.prompt_tokens()
    turn = library_turn(real_stack, LONG)
    end = turn.outcome.end
    assert end is not None and turn.text.strip()
    # The answer ran into llama.cpp's cap: END says so, with llama.cpp's counts.
    assert end.reason == "length"
    assert end.answer_tokens == MAX_TOKENS
    assert llama.tokens_predicted() - before[0] == end.answer_tokens
    assert llama.prompt_tokens() - before[1] == end.prompt_tokens > 0
    assert (end.model, end.backend) == (MODEL_ALIAS, BACKEND)
    # Streamed: many pieces, the first long before the last (relative to the
    # whole answer's time, so a slow machine changes nothing), as the model
    # wrote them (the server's own clock says the same).
    assert len(turn.arrivals) >= 10, len(turn.arrivals)
    first, last = turn.arrivals[0] - turn.sent, turn.arrivals[-1] - turn.sent
    assert first < 0.5 * last, (first, last)
    assert 0 < end.first_token_ms < 0.5 * end.total_ms, end
    print(f"\n[real model] {end.answer_tokens} tokens in {len(turn.arrivals)} pieces; first"
          f" after {first:.2f} s, last after {last:.2f} s")


def test_cancel_stops_the_generation_in_llamacpp(real_stack: Stack, llama: Llama) -> None:
    before = llama.tokens_predicted()
    turn = library_turn(real_stack, LONG, cancel_after=1)
    end = turn.outcome.end
    assert turn.outcome.cancelled and end is not None, turn.outcome
    assert end.answer_tokens < MAX_TOKENS
    # On llama.cpp's side the request ended there: no slot is generating, and
    # the tokens it produced for it are a fraction of what the uncancelled
    # answer takes (MAX_TOKENS: the previous test), and stay so.
    llama.wait_idle()
    produced = llama.tokens_predicted() - before
    assert produced < MAX_TOKENS // 2, (produced, end)
    time.sleep(1.0)
    assert not llama.busy()
    assert llama.tokens_predicted() - before == produced
    # The part the user saw is stored as a cancelled turn.
    r = real_stack.exec("server", "chat-server", "history", "export", real_stack.user,
                        "--conversation", turn.conversation)
    (stored,) = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert stored["status"] == "cancelled" and stored["answer"] == turn.text
    # And the slot serves the next request.
    assert library_turn(real_stack, FRENCH[0]).text.strip()


def test_an_address_the_model_writes_is_masked(real_stack: Stack) -> None:
    turns = [library_turn(real_stack, prompt) for prompt in EMAIL]
    for turn in turns:  # nothing of the kind gets through
        assert not [f for f in find_personal_data(turn.text) if f.kind == "email"], turn.text
    masked = [t for t in turns if EMAIL_MASK in t.text]
    assert masked, [t.text for t in turns]
    for turn in masked:  # and the user is told
        assert NoticeKind.ANSWER_MASKED in [n.kind for n in turn.outcome.notices]
    # The original client's session gets the same answer masked too.
    with OriginalV1Client(real_stack.port, real_stack.host, timeout=60.0) as s:
        assert s.login(real_stack.user, real_stack.password) == (
            USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        chunks, how = s.answer(EMAIL[turns.index(masked[0])])
    assert how == "terminator"
    assert EMAIL_MASK in answer_text(chunks)
    assert "@" not in answer_text(chunks)


def test_original_client_session_gets_clean_ascii(real_stack: Stack) -> None:
    with OriginalV1Client(real_stack.port, real_stack.host, timeout=60.0) as s:
        assert s.login(real_stack.user, real_stack.password) == (
            USERNAME_ACCEPTED, PASSWORD_ACCEPTED)
        s.send_frame(FRENCH[0])
        raw: list[bytes] = []
        while (chunk := s.read_chunk()) != b" " * 64:
            assert len(chunk) == 64, [*raw, chunk]  # never cut short
            raw.append(chunk)
        assert s.disconnect() == DISCONNECTED
    data = b"".join(raw)
    assert V1_CLEAN.fullmatch(data), data
    v1_answer = answer_text(raw)
    assert v1_answer.strip()
    # The same question over v2 (a conversation of its own, so the same
    # answer): accented there, transliterated for the original client.
    v2_answer = library_turn(real_stack, FRENCH[0]).text
    assert non_ascii_letters(v2_answer), v2_answer
    assert v1_answer.strip() == anyascii(v2_answer).strip()


def test_the_conversation_is_stored_and_exported(real_stack: Stack) -> None:
    conversation = f"real-{uuid.uuid4().hex[:8]}"
    conn = connect(real_stack)
    try:
        first = library_turn(real_stack, FRENCH[1], conversation=conversation, conn=conn)
        second = library_turn(real_stack, "Say it again in English.", conversation=conversation,
                              conn=conn)
    finally:
        conn.close()
    ends = [t.outcome.end for t in (first, second)]
    assert all(e is not None for e in ends)
    # The second answer was made with the first in the model's context.
    assert ends[1].prompt_tokens > ends[0].prompt_tokens  # type: ignore[union-attr]

    r = real_stack.exec("server", "chat-server", "history", "export", real_stack.user,
                        "--conversation", conversation)
    assert r.returncode == 0, r.stderr
    turns = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [t["user"] for t in turns] == [FRENCH[1], "Say it again in English."]
    for stored, turn, end in zip(turns, (first, second), ends, strict=True):
        assert stored["conversation"] == conversation
        assert (stored["model"], stored["backend"]) == (MODEL_ALIAS, BACKEND)
        assert stored["status"] == "complete"
        assert stored["answer"] == turn.text
        assert end is not None
        assert (stored["prompt_tokens"], stored["answer_tokens"]) == (
            end.prompt_tokens, end.answer_tokens)
    # Every turn of this stack, the other tests' too, came from llama.cpp.
    assert {(t["model"], t["backend"]) for t in exported(real_stack)} == {(MODEL_ALIAS, BACKEND)}
