"""Grafana of the monitoring profile: the dashboard loads and every panel query
parses, it uses the provisioned data source, and the entrypoint never starts
Grafana with a known admin password."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import yaml

from .promql import MONITORING, metric_names

GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "chat-service.json"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.extend(panel.get("targets", []))
        for inner in panel.get("panels", []):
            out.extend(inner.get("targets", []))
    return out


def test_dashboard_loads_and_every_query_parses():
    dash = dashboard()
    assert dash["uid"] == "chat-service" and dash["title"]
    exprs = [t["expr"] for t in targets(dash)]
    assert len(exprs) >= 20
    for expr in exprs:
        assert metric_names(expr), expr  # raises on a malformed query


def test_dashboard_shows_what_the_issue_asks_for():
    names = set().union(*(metric_names(t["expr"]) for t in targets(dashboard())))
    # turn rate and errors, first-token latency, queue, refusals
    assert {"chat_messages_total", "chat_first_token_seconds_bucket", "chat_queue_length",
            "chat_queue_wait_seconds_bucket", "chat_moderation_refusals_max_per_user"} <= names


def test_panels_use_the_provisioned_data_source():
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    assert provisioned["datasources"][0]["url"] == "http://prometheus:9090"
    dash = dashboard()
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_panels_do_not_overlap():
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_dashboard_provider_points_at_the_mounted_directory():
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/chat-service.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# ---- the entrypoint ---------------------------------------------------------------------
def run_entrypoint(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run monitoring/grafana/entrypoint.sh with a stand-in for Grafana's /run.sh
    that prints the password it was given."""
    fake_run = tmp_path / "run.sh"
    fake_run.write_text('#!/bin/sh\nprintf "started with %s args=%s\\n" '
                        '"$GF_SECURITY_ADMIN_PASSWORD" "$*"\n')
    fake_run.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    full_env = {"PATH": os.environ["PATH"], "GF_PATHS_DATA": str(data),
                "GRAFANA_RUN": str(fake_run), **env}
    return subprocess.run(["/bin/sh", str(GRAFANA / "entrypoint.sh"), "--flag"],
                          env=full_env, capture_output=True, text=True, timeout=30)


def test_first_start_generates_a_private_random_password_and_keeps_it(tmp_path):
    first = run_entrypoint(tmp_path)
    assert first.returncode == 0, first.stderr
    file = tmp_path / "data" / "admin-password"
    password = file.read_text().strip()
    assert len(password) >= 24 and password.isalnum()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert first.stdout == f"started with {password} args=--flag\n"
    # The log line says where to read it, never the password itself.
    assert "docker compose exec grafana cat" in first.stderr and password not in first.stderr
    second = run_entrypoint(tmp_path)
    assert second.stdout == f"started with {password} args=--flag\n"
    assert second.stderr == ""


def test_passwords_differ_between_installations(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    run_entrypoint(a)
    run_entrypoint(b)
    assert (a / "data/admin-password").read_text() != (b / "data/admin-password").read_text()


def test_a_configured_password_is_used_and_nothing_is_written(tmp_path):
    result = run_entrypoint(tmp_path, GF_SECURITY_ADMIN_PASSWORD="operator-choice")
    assert result.stdout == "started with operator-choice args=--flag\n"
    assert not (tmp_path / "data" / "admin-password").exists()


def test_entrypoint_is_posix_sh():
    # The Grafana image may have no bash; dash (Debian's sh) is strict POSIX.
    dash = "/bin/dash" if os.path.exists("/bin/dash") else "/bin/sh"
    result = subprocess.run([dash, "-n", str(GRAFANA / "entrypoint.sh")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
