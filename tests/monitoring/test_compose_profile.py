"""The `monitoring` compose profile, as `docker compose config` resolves it (no
image is pulled): Prometheus and Grafana with pinned official images, published
on loopback only; the server's metrics port set and never published."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from .promql import MONITORING, REPO


def compose_config(*profiles: str, **env: str) -> dict:
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("docker compose is missing; CI provisions it", pytrace=False)
        pytest.skip("docker compose is not installed")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("CHAT_", "OLLAMA_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))}
    # Only until the stack stops requiring it; harmless afterwards.
    clean["CHAT_BOOTSTRAP_PASSWORD"] = "not-used"
    clean.update(env)
    args = ["docker", "compose", "--env-file", os.devnull, "-f", "docker-compose.yml"]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--format", "yaml"], cwd=REPO, env=clean,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_monitoring_profile_adds_prometheus_and_grafana_with_pinned_images():
    services = compose_config("monitoring")["services"]
    for name, repo in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        image = services[name]["image"]
        assert image.startswith(repo), image
        tag = image.split(":", 1)[1]
        assert tag not in ("latest", "main") and any(c.isdigit() for c in tag), image


def test_monitoring_services_only_start_with_the_profile():
    services = compose_config()["services"]
    assert "prometheus" not in services and "grafana" not in services


def test_prometheus_and_grafana_are_published_on_loopback_by_default():
    services = compose_config("monitoring")["services"]
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        (published,) = services[name]["ports"]
        assert published["host_ip"] == "127.0.0.1" and published["target"] == port


def test_server_serves_metrics_inside_the_network_and_never_publishes_them():
    server = compose_config("monitoring")["services"]["server"]
    assert server["environment"]["CHAT_METRICS_PORT"] == "9464"
    assert server["environment"]["CHAT_METRICS_HOST"] == "0.0.0.0"
    assert [p["target"] for p in server["ports"]] == [5050]


def test_prometheus_mounts_the_repository_configuration():
    prometheus = compose_config("monitoring")["services"]["prometheus"]
    mounts = {m["target"]: m for m in prometheus["volumes"]}
    assert mounts["/etc/prometheus"]["read_only"] is True
    assert os.path.samefile(mounts["/etc/prometheus"]["source"], MONITORING / "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_never_gets_a_known_admin_password():
    grafana = compose_config("monitoring")["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] in ("", None)
    assert grafana["entrypoint"][-1] == "/etc/grafana/chat-entrypoint.sh"
    mounts = {m["target"]: m["source"] for m in grafana["volumes"]}
    assert os.path.samefile(mounts["/etc/grafana/chat-entrypoint.sh"],
                            MONITORING / "grafana" / "entrypoint.sh")
    configured = compose_config("monitoring", GRAFANA_ADMIN_PASSWORD="s3cret")["services"]["grafana"]
    assert configured["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
