"""The model side of the configuration: CHAT_BACKENDS, CHAT_BACKEND_<NAME>_*,
CHAT_MODEL / OLLAMA_MODEL, CHAT_MODELS. Every mistake gets its own line; keys
never appear in errors, the summary or a repr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chat_server.config import (
    HELLO_MODELS_BUDGET,
    LEGACY_BACKEND,
    BackendKind,
    BackendSpec,
    ConfigError,
    Settings,
    hello_models_size,
    model_key,
)

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-very-secret-key-0123456789"


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return str(info.value).splitlines()


def test_without_chat_backends_one_ollama_at_ollama_host_as_today() -> None:
    s = Settings.from_env({"OLLAMA_HOST": "http://ollama:11434", "CHAT_MAX_PARALLEL": "3",
                           "OLLAMA_MODEL": "qwen2.5:0.5b"})
    assert s.backend_specs() == (
        BackendSpec(LEGACY_BACKEND, BackendKind.OLLAMA, "http://ollama:11434", 3),)
    assert s.model == "qwen2.5:0.5b" and s.allowed_models() == ("qwen2.5:0.5b",)
    assert Settings().backend_specs() == (BackendSpec("ollama", BackendKind.OLLAMA, None, 2),)


def test_the_single_backend_takes_per_backend_settings_too(tmp_path: Path) -> None:
    s = Settings.from_env({"CHAT_BACKEND_OLLAMA_PARALLEL": "5",
                           "CHAT_BACKEND_OLLAMA_API_KEY": KEY})
    (spec,) = s.backend_specs()
    assert spec.name == "ollama" and spec.max_parallel == 5 and spec.api_key == KEY


def test_several_backends_of_both_kinds() -> None:
    s = Settings.from_env({
        "CHAT_BACKENDS": " gpu1=ollama:http://gpu1:11434/ , gpu2=OLLAMA:https://gpu2,"
                         "cpu=openai:http://llamacpp:8080/v1,",
        "CHAT_MAX_PARALLEL": "3",
        "CHAT_BACKEND_GPU2_PARALLEL": "8",
        "CHAT_BACKEND_CPU_API_KEY": KEY,
        "OLLAMA_HOST": "http://ignored:11434",
    })
    assert s.backend_specs() == (
        BackendSpec("gpu1", BackendKind.OLLAMA, "http://gpu1:11434", 3),
        BackendSpec("gpu2", BackendKind.OLLAMA, "https://gpu2", 8),
        BackendSpec("cpu", BackendKind.OPENAI, "http://llamacpp:8080/v1", 3, KEY),
    )


def test_api_key_from_a_file_is_stripped_of_its_newline(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    s = Settings.from_env({"CHAT_BACKENDS": "cpu=openai:http://h:8080/v1",
                           "CHAT_BACKEND_CPU_API_KEY_FILE": str(key_file)})
    assert s.backend_specs()[0].api_key == KEY


def test_keys_are_never_shown(tmp_path: Path) -> None:
    s = Settings.from_env({"CHAT_BACKENDS": "cpu=openai:http://h:8080/v1",
                           "CHAT_BACKEND_CPU_API_KEY": KEY})
    assert KEY not in repr(s) and KEY not in str(s.log_summary())
    assert "cpu=openai:http://h:8080/v1 parallel=2 api_key=[set]" in s.log_summary()["backends"]
    bad = problems({"CHAT_BACKENDS": "cpu=openai:http://h:8080/v1",
                    "CHAT_BACKEND_CPU_API_KEY": KEY + " trailing words"})
    assert bad == ["CHAT_BACKEND_CPU_API_KEY: expected a key without spaces or control characters"
                   f" ({len(KEY) + 15} characters given)"]


def test_every_mistake_gets_its_own_line(tmp_path: Path) -> None:
    lines = problems({
        "CHAT_BACKENDS": "gpu1=olama:http://x,=ollama:http://y,gpu1=ollama:ftp://z,"
                         "x=openai:http://h:99999,nokind,ok=ollama:http://ok,OK=openai:http://dup",
        "CHAT_BACKEND_GPU2_PARALLEL": "3",
        "CHAT_BACKEND_OK_PARALEL": "3",
        "CHAT_BACKEND_OK_PARALLEL": "0",
        "CHAT_BACKEND_OK_API_KEY": KEY,
        "CHAT_BACKEND_OK_API_KEY_FILE": str(tmp_path / "missing"),
        "CHAT_MODEL": "c d",
        "CHAT_MODELS": "a,b,A",
    })
    assert lines == [
        "CHAT_MODEL: expected a non-empty model name without spaces or commas, got 'c d'",
        "CHAT_MODELS: 'A' is listed twice (as 'a')",
        "CHAT_BACKENDS: backend gpu1: expected kind ollama or openai, got 'olama'",
        "CHAT_BACKENDS: expected a backend name of letters, digits and _ (starting with a"
        " letter, at most 32), got ''",
        "CHAT_BACKENDS: backend gpu1: expected an http:// or https:// URL, got 'ftp://z'",
        "CHAT_BACKENDS: backend x: bad port in 'http://h:99999'",
        "CHAT_BACKENDS: expected NAME=KIND:URL, got 'nokind'",
        "CHAT_BACKENDS: backend name 'OK' is used twice",
        "CHAT_BACKEND_GPU2_PARALLEL: no backend named GPU2 in CHAT_BACKENDS (backends: OK)",
        "CHAT_BACKEND_OK_PARALEL: unknown backend setting (expected"
        " CHAT_BACKEND_<NAME>_PARALLEL, _API_KEY or _API_KEY_FILE)",
        "CHAT_BACKEND_OK_PARALLEL: expected an integer 1-1024, got '0'",
        "CHAT_BACKEND_OK_API_KEY and CHAT_BACKEND_OK_API_KEY_FILE: expected one of them, got both",
    ]
    assert all(KEY not in line for line in lines)


def test_unreadable_key_file_is_named_but_nothing_read_is_shown(tmp_path: Path) -> None:
    lines = problems({"CHAT_BACKENDS": "cpu=openai:http://h/v1",
                      "CHAT_BACKEND_CPU_API_KEY_FILE": str(tmp_path / "nope")})
    assert lines == [f"CHAT_BACKEND_CPU_API_KEY_FILE: cannot read '{tmp_path / 'nope'}':"
                     " No such file or directory"]


def test_an_empty_backend_list_is_a_mistake() -> None:
    assert problems({"CHAT_BACKENDS": " , "}) == [
        "CHAT_BACKENDS: expected at least one NAME=KIND:URL, got ' , '"]


def test_a_model_name_longer_than_the_protocol_allows_is_a_mistake() -> None:
    # HELLO lists the models; a name over docs/PROTOCOL.md §4's bound could not be sent.
    long_name = "m" * 257
    assert problems({"CHAT_MODELS": f"llama3.2,{long_name},{'m' * 256}"}) == [
        f"CHAT_MODELS: expected a model name of at most 256 characters, got"
        f" {long_name[:77] + '...'!r} (257 characters)"]


def test_chat_model_wins_over_ollama_model() -> None:
    s = Settings.from_env({"CHAT_MODEL": "smollm2", "OLLAMA_MODEL": "llama3.2"})
    assert s.model == "smollm2"


def test_allowed_models_put_the_default_first_as_spelled_in_chat_models() -> None:
    s = Settings.from_env({"CHAT_MODEL": "qwen2.5", "CHAT_MODELS": "llama3.2,Qwen2.5:latest"})
    assert s.model == "Qwen2.5:latest" and s.models == ("Qwen2.5:latest", "llama3.2")
    assert s.allowed_models() == s.models


def test_chat_models_must_include_the_default() -> None:
    assert problems({"CHAT_MODELS": "qwen2.5,smollm2"}) == [
        "CHAT_MODELS: expected a list that includes the default model 'llama3.2'"
        " (CHAT_MODEL), got 'qwen2.5,smollm2'"]


@pytest.mark.parametrize(("a", "b", "same"), [
    ("llama3.2", "llama3.2:latest", True), ("LLaMA3.2", "llama3.2", True),
    ("qwen2.5:0.5b", "qwen2.5", False), ("hf.co/org/model", "hf.co/org/model:latest", True),
    ("registry:5000/m", "registry:5000/m:latest", True),
])
def test_model_names_compare_like_ollamas(a: str, b: str, same: bool) -> None:
    assert (model_key(a) == model_key(b)) is same


def test_chat_server_prints_each_mistake_on_its_own_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OLLAMA_"))}
    env.update({"CHAT_BACKENDS": "a=x:http://h,b=ollama:nourl", "CHAT_DB": str(tmp_path / "db")})
    r = subprocess.run([sys.executable, "-m", "chat_server", "users", "list"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "chat-server: configuration error: CHAT_BACKENDS: backend a: expected kind ollama or"
        " openai, got 'x'",
        "chat-server: configuration error: CHAT_BACKENDS: backend b: expected an http:// or"
        " https:// URL, got 'nourl'",
    ]


def test_a_model_list_too_long_for_a_hello_before_login_is_refused() -> None:
    # The v2 HELLO lists the models and travels before login, when clients
    # refuse frames over 4096 bytes (docs/PROTOCOL.md §10).
    names = ["llama3.2", *(f"some-org/a-rather-long-model-name-{i:03d}:latest" for i in range(120))]
    [line] = problems({"CHAT_MODELS": ",".join(names)})
    assert line.startswith("CHAT_MODELS: the server's HELLO lists every model")
    assert f"at most {HELLO_MODELS_BUDGET} bytes in all" in line
    fitting = names[: HELLO_MODELS_BUDGET // 60]
    assert hello_models_size("llama3.2", tuple(fitting)) <= HELLO_MODELS_BUDGET
    assert Settings.from_env({"CHAT_MODELS": ",".join(fitting)}).allowed_models() == tuple(fitting)
