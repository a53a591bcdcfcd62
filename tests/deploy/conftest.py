"""Fixtures for the offline deployment checks (helpers in deploy_tools.py).

The tools live in their own venv (`make deploy-tools`: .venv-deploy from requirements-deploy.txt)
so checkov's dependency tree never touches the app's. The tests run under any pytest (the app
venv's, in `make test`) and call the tools as processes; without the deploy venv every test here
skips and says how to install it. Set CREDIT_PD_DEPLOY_VENV to use a venv elsewhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import (
    CHART_DIR,
    EKS_CLUSTER_CONFIG,
    INSTALL_HINT,
    K8S_BASE,
    K8S_EKS,
    K8S_LOCAL,
    LOCAL_VALUES,
    PRODUCTION_VALUES,
    REPO_ROOT,
    S3_VALUES,
    SITE_VALUES,
    DeployTools,
    Helm,
    kustomize,
    run_tool,
)


@pytest.fixture(scope="session")
def deploy_tools() -> DeployTools:
    venv = Path(os.environ.get("CREDIT_PD_DEPLOY_VENV", REPO_ROOT / ".venv-deploy"))
    tools = DeployTools(venv / "bin")
    missing = [p.name for p in (tools.python, tools.checkov, tools.kubernetes_validate) if not p.exists()]
    if missing:
        pytest.skip(f"{INSTALL_HINT}; missing in {tools.bin_dir}: {', '.join(missing)}")
    probe = run_tool([tools.python, "-c", "import helm_python, kubernetes_validate"])
    if probe.returncode != 0:
        pytest.skip(f"{INSTALL_HINT}; import failed: {probe.stderr.strip().splitlines()[-1:]}")
    return tools


@pytest.fixture(scope="session")
def helm(deploy_tools: DeployTools, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(deploy_tools, tmp_path_factory.mktemp("helm-values"))


@pytest.fixture(scope="session")
def default_objects(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


@pytest.fixture(scope="session")
def production_objects(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(PRODUCTION_VALUES, SITE_VALUES)


@pytest.fixture(scope="session")
def s3_objects(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(PRODUCTION_VALUES, SITE_VALUES, values=S3_VALUES)


@pytest.fixture(scope="session")
def local_chart_objects(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(LOCAL_VALUES)


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: `kubectl kustomize` renders k8s/ (any kubectl >= 1.14 works offline)")
    return path


@pytest.fixture(scope="session")
def base_objects(kubectl: str) -> list[dict[str, Any]]:
    return kustomize(kubectl, K8S_BASE)


@pytest.fixture(scope="session")
def eks_objects(kubectl: str) -> list[dict[str, Any]]:
    return kustomize(kubectl, K8S_EKS)


@pytest.fixture(scope="session")
def local_objects(kubectl: str) -> list[dict[str, Any]]:
    return kustomize(kubectl, K8S_LOCAL)


@pytest.fixture(scope="session")
def kube_versions() -> list[str]:
    """Kubernetes versions to validate against: the chart's floor and the EKS cluster's version."""
    floor = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    floor_version = floor.removeprefix(">=").split("-")[0].strip()
    cluster = str(yaml.safe_load(EKS_CLUSTER_CONFIG.read_text())["metadata"]["version"])
    return sorted({floor_version, f"{cluster}.0"}, key=lambda v: tuple(int(p) for p in v.split(".")))
