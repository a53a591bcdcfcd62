"""The chart rendered with monitoring on (real Helm via tests/deploy), and its PrometheusRule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_tools import INSTALL_HINT, REPO_ROOT, DeployTools, Helm, find, run_tool

MONITORING_ON: dict[str, Any] = {
    "monitoring": {
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True},
    }
}


def deploy_tools_or_skip() -> DeployTools:
    venv = Path(os.environ.get("CREDIT_PD_DEPLOY_VENV", REPO_ROOT / ".venv-deploy"))
    tools = DeployTools(venv / "bin")
    if not tools.python.exists() or run_tool([tools.python, "-c", "import helm_python"]).returncode != 0:
        pytest.skip(f"{INSTALL_HINT} (helm renders the chart's monitoring templates)")
    return tools


def render_monitoring(helm: Helm, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    merged = {
        "monitoring": {
            k: {**v, **((values or {}).get("monitoring", {}).get(k, {}))}
            for k, v in MONITORING_ON["monitoring"].items()
        }
    }
    return helm.render(values=merged)


def prometheus_rule(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "PrometheusRule")
