"""The README stays accurate: its configuration table is the server's own list
of variables, and every make target it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from chat_server.config import VARIABLES, variables_markdown

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_readme_configuration_table_matches_the_server_settings():
    table = README.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0]
    assert table.strip() == variables_markdown().strip()


def test_every_variable_is_in_env_example():
    example = (REPO / ".env.example").read_text()
    fixed_by_compose = {"CHAT_HOST", "CHAT_DB", "OLLAMA_HOST", "CHAT_CUSS_WORDS_FILE",
                        "CHAT_METRICS_PORT", "CHAT_METRICS_HOST", "CHAT_ADMIN_SOCKET",
                        "CHAT_DATA_DIR"}
    for var in VARIABLES:
        if var.name not in fixed_by_compose:
            # CHAT_BACKEND_<NAME>_PARALLEL is shown for a concrete backend name.
            name = re.escape(var.name).replace(re.escape("<NAME>"), "[A-Z][A-Z0-9_]*")
            assert re.search(rf"^#?{name}=", example, re.M), var.name


def test_every_llamacpp_overlay_variable_is_in_env_example():
    example = (REPO / ".env.example").read_text()
    overlay = (REPO / "docker-compose.llamacpp.yml").read_text()
    names = set(re.findall(r"\$\{(LLAMACPP_[A-Z_]+|OLLAMA_REPLICAS)", overlay))
    assert "LLAMACPP_MODEL_FILE" in names
    for name in sorted(names):
        assert re.search(rf"^#?{name}=", example, re.M), name


def test_make_targets_named_in_the_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for name in set(re.findall(r"make ([a-z][a-z-]+)", README)):
        assert name in targets, name
