"""Helpers: find promtool, and the metric names a PromQL expression reads."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import promql_parser
import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"

#: Grafana's variables, replaced by values PromQL accepts before parsing.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
}


def promtool() -> str:
    """The promtool binary (Debian's `prometheus` package); skipped without it,
    except under CI=true, where .ci/run installs it."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("promtool is missing; CI installs it (apt-get install prometheus)",
                        pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (parsed, not pattern-matched:
    ``promql_parser`` raises ValueError on a malformed or mistyped expression)."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if re.search(r"\$\w", expr):
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                raise ValueError(f"selector without a metric name in {expr!r}")
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
