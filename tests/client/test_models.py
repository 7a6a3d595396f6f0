"""Model choice in chat-client: ``/models`` (the current one marked), ``/model
NAME`` for the rest of the conversation, ``--model NAME`` in one-shot mode;
against a real server with two backends (stand-ins) offering different models."""

from __future__ import annotations

import pytest

from tests.client.conftest import run_client, server_args
from tests.client.terminal import PROMPT, Client, user_args
from tests.fixtures.server import PASSWORD, USER


@pytest.fixture
def two_model_server(server_factory, standin_factory):
    gpu = standin_factory(models="llama3.2")
    cpu = standin_factory(models="smollm2:135m")
    server = server_factory(CHAT_BACKENDS=f"gpu=ollama:{gpu.url},cpu=openai:{cpu.openai_url}",
                            CHAT_MODELS="llama3.2,smollm2:135m", CHAT_PULL_MODEL="false")
    return server, gpu, cpu


def _oneshot(server, *args: str):
    return run_client([*server_args(server), "--user", USER, "--password-stdin", *args],
                      stdin=PASSWORD + "\n")


def test_oneshot_model_flag_picks_the_model(two_model_server):
    server, gpu, cpu = two_model_server
    r = _oneshot(server, "--model", "smollm2:135m", "--message", "small please")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: small please")
    assert [q["body"]["model"] for q in cpu.requests()] == ["smollm2:135m"]
    r = _oneshot(server, "--message", "default please")
    assert r.returncode == 0 and gpu.requests()[-1]["body"]["model"] == "llama3.2:latest"
    assert server.history(USER)[0]["model"] == "smollm2:135m"


def test_oneshot_unknown_model_is_a_server_error(two_model_server):
    server, gpu, cpu = two_model_server
    r = _oneshot(server, "--model", "gpt-9", "--message", "hi")
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "not offered" in r.stderr and r.stdout == ""
    assert gpu.requests() == [] and cpu.requests() == []


@pytest.mark.parametrize(("args", "problem"), [
    (["--model", "x"], "--model only applies with --message"),
    (["--model", "x", "--protocol", "v1", "--message", "hi"], "--model needs protocol v2"),
    # Names the protocol refuses (docs/PROTOCOL.md §4) never reach the server.
    (["--model", "m" * 257, "--message", "hi"], "--model is longer than 256 characters"),
    (["--conversation", "c" * 257, "--message", "hi"],
     "--conversation is longer than 256 characters"),
    (["--conversation", "a\x1bb", "--message", "hi"], "--conversation contains a control"),
])
def test_model_flag_usage_errors(args, problem):
    r = run_client(["--user", USER, *args])
    assert r.returncode == 2 and problem in r.stderr


def test_models_and_model_commands(two_model_server, tmp_path):
    server, gpu, cpu = two_model_server
    c = Client(user_args(server.port), tmp_path)
    try:
        _models_and_model_commands(c, gpu, cpu)
    finally:
        c.close()


def _models_and_model_commands(c, gpu, cpu) -> None:
    c.login(PASSWORD)
    c.expect(PROMPT)
    shown = c.run("/models", "smollm2:135m")
    assert "* llama3.2" in shown and "(default)" in shown
    c.run("/model nope", "does not offer nope")
    c.run("/model SmolLM2:135m", "now come from smollm2:135m")
    shown = c.run("/models", "smollm2:135m")
    assert "* smollm2:135m" in shown and "  llama3.2" in shown
    c.run("small talk", "Echo: small talk")
    c.run("more small talk", "Echo: more small talk")
    assert [q["body"]["model"] for q in cpu.requests()] == ["smollm2:135m"] * 2
    # /new: a new conversation starts with the default model again.
    c.run("/new", "new conversation")
    c.run("big talk", "Echo: big talk")
    assert gpu.requests()[-1]["body"]["messages"][-1]["content"] == "big talk"
    assert len(cpu.requests()) == 2
