"""
Per-backend settings (``CHAT_BACKEND_<NAME>_PARALLEL``, ``_API_KEY``,
``_API_KEY_FILE``) reach the server in the stack the way README's "Per-backend
settings in the stack" says: the README's own ``docker-compose.override.yml``
and ``.env`` lines, put in a project directory beside a copy of the
repository's compose files, rendered by ``docker compose config`` (compose
finds the override by itself, as on a user's machine), and the server's
resulting environment handed to the server's own configuration parser.

The API key's secret file is read where compose would mount it: the rendered
secret's source file stands in for its path in the container.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chat_server.config import BackendKind, BackendSpec, Settings

from tests.fixtures.engines import REPO, docker_problem, missing_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README = (REPO / "README.md").read_text()
#: What the test puts in the secret file (never in the environment).
KEY = "sk-test-" + "7f3a9c" * 4


def readme_override() -> str:
    """The YAML block between README's backend-override markers."""
    block = README.split("<!-- backend-override:start -->")[1].split(
        "<!-- backend-override:end -->")[0]
    match = re.search(r"```yaml\n(.*?)```", block, re.S)
    assert match, "README's backend-override block has no yaml code"
    return match.group(1)


def readme_env_lines() -> list[str]:
    """The settings README's "Models and backends" example puts in ``.env``:
    its ``sh`` block without the CHAT_BACKEND_<NAME>_* lines, which README
    sends to the override instead."""
    section = README.split("## Models and backends")[1].split("\n## ")[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh example under Models and backends"
    lines = [line.split("  #")[0].strip() for line in match.group(1).splitlines()]
    assert any(line.startswith("CHAT_BACKEND_") for line in lines)  # shown there too
    return [line for line in lines if line and not line.startswith("CHAT_BACKEND_")]


def render(project: Path, *files: str) -> dict[str, Any]:
    """``docker compose config`` in ``project`` (its .env, and the override
    found by compose itself when no ``files`` are named), in an environment
    without any of the stack's variables."""
    if problem := docker_problem():
        missing_engine(problem, "run .ci/provision-docker.sh")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHAT_", "OLLAMA_", "LLAMACPP_", "COMPOSE_", "CPU_"))}
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(["docker", "compose", *args, "config", "--format", "json"],
                       capture_output=True, text=True, timeout=60, cwd=project, env=env)
    assert r.returncode == 0, f"compose refuses the documented setup:\n{r.stderr}"
    config: dict[str, Any] = json.loads(r.stdout)
    return config


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A stack directory as README describes it: the compose files, the
    override, a .env with the backends, and the key in secrets/."""
    for name in ("docker-compose.yml", "docker-compose.llamacpp.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "docker-compose.override.yml").write_text(readme_override())
    (tmp_path / ".env").write_text("".join(f"{line}\n" for line in readme_env_lines()))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cpu_api_key").write_text(KEY + "\n")
    return tmp_path


def server_environment_as_mounted(config: dict[str, Any]) -> dict[str, str]:
    """The server's environment, with every path of a mounted secret replaced
    by the host file compose mounts there (what the server then reads)."""
    server = config["services"]["server"]
    env = {k: v for k, v in server["environment"].items() if v is not None}
    mounts: dict[str, str] = {}
    for secret in server.get("secrets", []):
        target = secret.get("target") or secret["source"]
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        mounts[path] = config["secrets"][secret["source"]]["file"]
    return {k: mounts.get(v, v) for k, v in env.items()}


def test_the_documented_override_reaches_the_servers_backend_settings(project: Path) -> None:
    config = render(project)
    env = config["services"]["server"]["environment"]
    assert env["CHAT_BACKEND_GPU1_PARALLEL"] == "4"
    assert env["CHAT_BACKEND_CPU_API_KEY_FILE"] == "/run/secrets/cpu_api_key"
    # The override adds to the stack's environment, it does not replace it.
    assert env["OLLAMA_HOST"] == "http://ollama:11434" and env["CHAT_PORT"] == "5050"

    settings = Settings.from_env(server_environment_as_mounted(config))
    specs = {spec.name: spec for spec in settings.backend_specs()}
    assert specs == {
        "gpu1": BackendSpec("gpu1", BackendKind.OLLAMA, "http://gpu1:11434", 4),
        "gpu2": BackendSpec("gpu2", BackendKind.OLLAMA, "http://gpu2:11434", 2),
        "cpu": BackendSpec("cpu", BackendKind.OPENAI, "http://llamacpp:8080/v1", 2, KEY),
    }
    assert settings.allowed_models() == ("llama3.2", "smollm2:135m")


def test_the_key_is_a_mounted_file_not_in_the_containers_configuration(project: Path) -> None:
    config = render(project)
    server = config["services"]["server"]
    assert [s["source"] for s in server["secrets"]] == ["cpu_api_key"]
    assert Path(config["secrets"]["cpu_api_key"]["file"]) == project / "secrets" / "cpu_api_key"
    assert KEY not in json.dumps(config)  # nothing docker inspect would show


def test_with_the_llamacpp_overlay_compose_file_in_env_keeps_the_override(project: Path) -> None:
    line = re.search(r"^COMPOSE_FILE=\S+$", README, re.M)
    assert line, "README names the files for the overlay case in COMPOSE_FILE"
    with (project / ".env").open("a") as env_file:
        env_file.write(f"{line.group(0)}\nLLAMACPP_MODEL_FILE=m.gguf\nLLAMACPP_MODEL=m\n")
    config = render(project)
    assert "llamacpp" in config["services"]
    env = config["services"]["server"]["environment"]
    assert env["CHAT_BACKEND_GPU1_PARALLEL"] == "4"
    assert env["CHAT_BACKEND_CPU_API_KEY_FILE"] == "/run/secrets/cpu_api_key"
    # The overlay's own per-backend setting is still there beside the override's.
    assert env["CHAT_BACKEND_LLAMACPP_PARALLEL"] == "2"


def test_backend_settings_in_env_alone_do_not_reach_the_server(project: Path) -> None:
    """Why README sends them to the override: a line in .env is not enough."""
    (project / "docker-compose.override.yml").unlink()
    with (project / ".env").open("a") as env_file:
        env_file.write("CHAT_BACKEND_GPU1_PARALLEL=4\n")
    env = render(project)["services"]["server"]["environment"]
    assert "CHAT_BACKEND_GPU1_PARALLEL" not in env
