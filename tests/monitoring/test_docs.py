"""README documents every metric and every alert, and .env.example every
setting of the monitoring profile."""

from __future__ import annotations

import re

import yaml
from chat_server.metrics import METRICS

from .promql import MONITORING, REPO

README = (REPO / "README.md").read_text()


def test_readme_documents_every_metric():
    for doc in METRICS:
        assert f"`{doc.name}`" in README, doc.name


def test_readme_documents_every_alert():
    rules = yaml.safe_load((MONITORING / "prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in README, rule["alert"]


def test_env_example_lists_every_monitoring_setting_of_the_compose_file():
    compose = (REPO / "docker-compose.yml").read_text()
    monitoring = compose[compose.index("  prometheus:"):]
    example = (REPO / ".env.example").read_text()
    for name in set(re.findall(r"\$\{([A-Z_]+)", monitoring)):
        assert re.search(rf"^#?{name}=", example, re.M), name


def test_readme_tells_how_to_start_the_monitoring_profile():
    assert "docker compose --profile monitoring up -d" in README
    assert "chat-server status" in README
