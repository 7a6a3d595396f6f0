"""promtool (Debian's prometheus package, installed on the host by CI) runs and
really checks: it accepts a valid rules file and rejects a broken one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.engines import missing_engine

pytestmark = pytest.mark.engines


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_engine("promtool is not installed", "run .ci/install-host-packages.sh")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_promtool_runs() -> None:
    r = _run("--version")
    assert r.returncode == 0, r.stderr
    assert "promtool, version" in r.stdout + r.stderr


def test_promtool_accepts_valid_rules_and_rejects_broken_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: up == 0\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: up ==\n")
    assert _run("check", "rules", str(good)).returncode == 0
    r = _run("check", "rules", str(bad))
    assert r.returncode != 0
    assert "bad.yml" in r.stdout + r.stderr
