"""
docker-compose.llamacpp.yml: llama.cpp's server as an OpenAI-compatible
backend beside (or instead of) Ollama.

The configuration tests read what compose makes of the overlay (the server's
backends, models and start order; the "instead of Ollama" switch; the stack
without the overlay unchanged). The last test starts the overlay's llamacpp
service as CI does, on the local image with the tiny model, and has it answer
on the compose network.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest

from tests.fixtures.engines import REPO, docker_problem, missing_engine
from tests.fixtures.llamacpp import MODEL_ALIAS, compose_overlay_env, require_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BASE = ["-f", "docker-compose.yml"]
OVERLAY = [*BASE, "-f", "docker-compose.llamacpp.yml"]
#: The overlay's two required settings (the stack itself needs none); no .env
#: of the developer's may leak in.
_MINIMAL_ENV = {
    "LLAMACPP_MODEL_FILE": "model.gguf",
    "LLAMACPP_MODEL": "my-gguf",
}


def _compose(files: list[str], *args: str, env: dict[str, str] | None = None,
             project: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("CHAT_", "OLLAMA_", "LLAMACPP_", "COMPOSE_"))}
    cmd = ["docker", "compose", "--env-file", os.devnull, *files]
    if project:
        cmd += ["-p", project]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**clean, **(env or {})})


def _config(files: list[str], **env: str) -> dict[str, Any]:
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    r = _compose(files, "config", "--format", "json", env={**_MINIMAL_ENV, **env})
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def test_overlay_adds_llamacpp_as_an_openai_backend_beside_ollama() -> None:
    cfg = _config(OVERLAY)
    server = cfg["services"]["server"]
    env = server["environment"]
    assert env["CHAT_BACKENDS"].split(",") == [
        "ollama=ollama:http://ollama:11434", "llamacpp=openai:http://llamacpp:8080/v1"]
    assert env["CHAT_MODEL"] == "llama3.2"
    assert env["CHAT_MODELS"].split(",") == ["llama3.2", "my-gguf"]
    assert env["CHAT_BACKEND_LLAMACPP_PARALLEL"] == "2"
    assert server["depends_on"]["llamacpp"]["condition"] == "service_healthy"
    assert server["depends_on"]["ollama"]["condition"] == "service_healthy"
    llama = cfg["services"]["llamacpp"]
    assert llama["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-b")  # pinned
    assert llama["environment"]["LLAMA_ARG_MODEL"] == "/models/model.gguf"
    assert llama["environment"]["LLAMA_ARG_ALIAS"] == "my-gguf"
    assert llama["environment"]["LLAMA_ARG_N_PARALLEL"] == "2"
    assert "ports" not in llama  # only the chat server talks to it
    assert llama["healthcheck"]["test"][-1] == "http://localhost:8080/health"
    assert llama["healthcheck"]["interval"] == "10s"
    # llama.cpp's own defaults for answer length and sampling; its metrics on.
    assert llama["environment"]["LLAMA_ARG_N_PREDICT"] == "-1"
    assert llama["environment"]["LLAMA_ARG_TEMPERATURE"] == "0.8"
    assert llama["environment"]["LLAMA_ARG_ENDPOINT_METRICS"] == "1"
    assert cfg["services"]["ollama"]["deploy"]["replicas"] == 1


def test_overlay_runs_llamacpp_instead_of_ollama_when_told() -> None:
    cfg = _config(OVERLAY, OLLAMA_REPLICAS="0", CHAT_MODEL="my-gguf",
                  CHAT_BACKENDS="llamacpp=openai:http://llamacpp:8080/v1")
    assert cfg["services"]["ollama"]["deploy"]["replicas"] == 0
    env = cfg["services"]["server"]["environment"]
    assert env["CHAT_BACKENDS"] == "llamacpp=openai:http://llamacpp:8080/v1"
    assert env["CHAT_MODEL"] == "my-gguf"


def test_overlay_image_model_and_size_are_configurable() -> None:
    cfg = _config(OVERLAY, LLAMACPP_IMAGE="example/llama:1", LLAMACPP_MODELS_DIR="/srv/gguf",
                  LLAMACPP_CTX_SIZE="16384", LLAMACPP_PARALLEL="4", LLAMACPP_THREADS="6",
                  LLAMACPP_N_PREDICT="512", LLAMACPP_TEMPERATURE="0",
                  LLAMACPP_HEALTH_INTERVAL="2s")
    llama = cfg["services"]["llamacpp"]
    assert llama["image"] == "example/llama:1"
    assert any(v["source"] == "/srv/gguf" and v["target"] == "/models" and v["read_only"]
               for v in llama["volumes"])
    assert llama["environment"]["LLAMA_ARG_CTX_SIZE"] == "16384"
    assert llama["environment"]["LLAMA_ARG_THREADS"] == "6"
    assert llama["environment"]["LLAMA_ARG_N_PREDICT"] == "512"
    assert llama["environment"]["LLAMA_ARG_TEMPERATURE"] == "0"
    assert llama["healthcheck"]["interval"] == "2s"
    assert cfg["services"]["server"]["environment"]["CHAT_BACKEND_LLAMACPP_PARALLEL"] == "4"


@pytest.mark.parametrize("missing", ["LLAMACPP_MODEL_FILE", "LLAMACPP_MODEL"])
def test_overlay_refuses_to_start_without_its_required_settings(missing: str) -> None:
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    env = {k: v for k, v in _MINIMAL_ENV.items() if k != missing}
    r = _compose(OVERLAY, "config", env=env)
    assert r.returncode != 0
    assert f"required variable {missing} is missing" in r.stderr


def test_stack_without_the_overlay_is_unchanged() -> None:
    cfg = _config(BASE)
    assert "llamacpp" not in cfg["services"]
    env = cfg["services"]["server"]["environment"]
    # CHAT_BACKENDS is passed through only when set: one Ollama backend.
    assert env.get("CHAT_BACKENDS") is None
    assert env["CHAT_MODEL"] == "llama3.2"
    assert env["OLLAMA_HOST"] == "http://ollama:11434"
    assert "deploy" not in cfg["services"]["ollama"]


def test_overlay_llamacpp_service_answers_on_the_compose_network() -> None:
    """As CI runs it: the local image, the tiny model, healthy, answering."""
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    require_engine()
    env = {**_MINIMAL_ENV, **compose_overlay_env()}
    project = f"chatllama-{uuid.uuid4().hex[:10]}"
    try:
        up = _compose(OVERLAY, "up", "-d", "--wait", "llamacpp", env=env, project=project,
                      timeout=240)
        assert up.returncode == 0, up.stderr + _compose(
            OVERLAY, "logs", "llamacpp", env=env, project=project).stdout

        def inside(*args: str) -> Any:
            r = _compose(OVERLAY, "exec", "-T", "llamacpp", "curl", "-fsS", *args,
                         env=env, project=project)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        models = inside("http://localhost:8080/v1/models")
        assert MODEL_ALIAS in [m["id"] for m in models["data"]]
        answer = inside("http://localhost:8080/v1/chat/completions",
                        "-H", "Content-Type: application/json", "-d", json.dumps({
                            "model": MODEL_ALIAS, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "Say hello."}]}))
        assert answer["choices"][0]["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] > 0
    finally:
        _compose(OVERLAY, "down", "--volumes", "--remove-orphans", "--timeout", "5",
                 env=env, project=project, timeout=120)
