"""The Prometheus configuration and alert rules: valid for promtool, every alert
tested by a scenario that fires and one that must not, and no rule reading a
metric the server does not export."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from chat_server.metrics import METRICS

from .promql import MONITORING, metric_names, promtool

PROMETHEUS = MONITORING / "prometheus"
#: Series Prometheus makes itself for every scrape target.
SYNTHETIC = {"up"}

#: What the issue requires an operator to hear about, and the alert that says it.
REQUIRED_ALERTS = {
    "ChatFailedLoginBurst",  # a burst of failed logins (password guessing)
    "ChatModerationRefusalBurst",  # a burst of moderation refusals from one user
    "ChatModelUnreachable",  # the model unreachable
    "ChatAnswersFailing",  # answers failing
}


def promtool_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=120)


def rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def sample_names() -> set[str]:
    """Names a scrape can contain, from the documented metrics."""
    names = set()
    for doc in METRICS:
        names.add(doc.name)
        if doc.kind == "histogram":
            names |= {f"{doc.name}_bucket", f"{doc.name}_sum", f"{doc.name}_count"}
    return names


def test_prometheus_config_passes_promtool_check_config():
    result = promtool_run("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_alert_rules_pass_promtool_check_rules():
    result = promtool_run("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_scenarios_pass_promtool_test_rules():
    result = promtool_run("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_the_operator_must_hear_about_exist():
    names = {rule["alert"] for rule in rules()}
    assert names >= REQUIRED_ALERTS


def test_every_alert_has_a_firing_scenario_and_a_quiet_one():
    doc = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts <= fires, f"no scenario where it fires: {alerts - fires}"
    assert alerts <= quiet, f"no scenario where it stays quiet: {alerts - quiet}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_reads_only_metrics_the_server_exports(rule):
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    unknown = names - sample_names() - SYNTHETIC
    assert not unknown, f"{rule['alert']} reads {unknown}, which the server does not export"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_and_description(rule):
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_no_alert_groups_by_a_user_or_address_label():
    # The metrics carry no such labels; a rule that asks for one would silently
    # never fire.
    for rule in rules():
        for word in ("user", "peer", "address", "addr"):
            assert f"{word}=" not in rule["expr"] and f"by ({word}" not in rule["expr"], rule["alert"]


def test_scrape_config_finds_every_server_replica_on_the_metrics_port():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "chat-server")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["server"] and sd["type"] == "A" and sd["port"] == 9464
