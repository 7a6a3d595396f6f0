"""
``docker compose up`` with nothing but the defaults: no .env, no variables,
no overlay. It must still run Ollama with llama3.2, as before backends,
llama.cpp and model choice were added.

Ollama's image cannot be pulled here (no registry), so this reads what compose
makes of docker-compose.yml (``docker compose config``) and hands the server's
resulting environment to the server's own configuration parser: what the
server would do with it is then known, not guessed.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from typing import Any

import pytest
from chat_server.config import BackendKind, BackendSpec, Settings

from tests.fixtures.engines import REPO, docker_problem, missing_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@functools.cache
def default_config() -> dict[str, Any]:
    """``docker compose config`` of docker-compose.yml alone, with no .env and
    none of the stack's variables in the environment (rendered once)."""
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "XDG_RUNTIME_DIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    r = subprocess.run(
        ["docker", "compose", "--env-file", os.devnull, "-f", "docker-compose.yml",
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert r.returncode == 0, f"compose refuses the defaults:\n{r.stderr}"
    config: dict[str, Any] = json.loads(r.stdout)
    return config


def test_defaults_start_ollama_and_the_server_only() -> None:
    services = default_config()["services"]
    # The client, Prometheus and Grafana sit in profiles: `up` leaves them out.
    assert sorted(services) == ["ollama", "server"]


def test_defaults_run_the_pinned_ollama_image_with_its_model_volume() -> None:
    ollama = default_config()["services"]["ollama"]
    assert ollama["image"] == "ollama/ollama:0.12.6"
    assert ollama["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert {"type": "volume", "source": "ollama-models", "target": "/root/.ollama"}.items() <= \
        ollama["volumes"][0].items()
    assert "ports" not in ollama and "deploy" not in ollama


def test_defaults_point_the_server_at_ollama_with_llama3_2() -> None:
    server = default_config()["services"]["server"]
    env = server["environment"]
    assert env["OLLAMA_HOST"] == "http://ollama:11434"
    assert env["CHAT_MODEL"] == "llama3.2"
    assert env["CHAT_PULL_MODEL"] == "true"
    # Passed through only when set, and nothing sets them.
    assert env["CHAT_BACKENDS"] is None and env["CHAT_MODELS"] is None
    assert "OLLAMA_MODEL" not in env
    assert server["depends_on"]["ollama"]["condition"] == "service_healthy"
    # The first start pulls the model: the health start period covers it.
    assert server["healthcheck"]["start_period"] == "20m0s"


def test_the_server_reads_the_defaults_as_one_ollama_that_pulls_llama3_2() -> None:
    env = default_config()["services"]["server"]["environment"]
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.model == "llama3.2"
    assert settings.allowed_models() == ("llama3.2",)
    assert settings.backend_specs() == (
        BackendSpec("ollama", BackendKind.OLLAMA, "http://ollama:11434", 2),)
    assert settings.pull_model is True  # missing models are pulled on Ollama backends
    # No password anywhere: the first start generates admin's (test_first_start.py).
    assert settings.bootstrap_user == "admin" and settings.bootstrap_password is None
