"""Helpers for the offline deployment checks: tool paths, real Helm rendering, manifest lookup.

The tools live in their own venv (`make deploy-tools`: .venv-deploy from requirements-deploy.txt)
so checkov's dependency tree never touches the app's. These tests run under any pytest (the app
venv's, in `make test`) and call the tools as processes: Helm through tests/deploy/helm_cli.py on
the deploy venv's Python (helm-python-sdk, Helm's Go SDK), `kubernetes-validate`, `checkov`, and
`kubectl kustomize`. Without the deploy venv, every test here skips and says how to install it.
Set CREDIT_PD_DEPLOY_VENV to use a venv elsewhere.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "credit-pd"
PRODUCTION_VALUES = CHART_DIR / "values-production.yaml"
K8S_DIR = REPO_ROOT / "k8s"
K8S_BASE = K8S_DIR / "base"
K8S_EKS = K8S_DIR / "overlays" / "eks"
K8S_LOCAL = K8S_DIR / "overlays" / "local"
LOCAL_VALUES = CHART_DIR / "values-local.yaml"
# The account-specific values values-production.yaml leaves empty (certificate, user pool), filled
# with examples; k8s/overlays/eks is rendered with them too (scripts/render_k8s.py).
SITE_VALUES = REPO_ROOT / "deploy" / "eks" / "site-values.example.yaml"
RENDER_K8S = REPO_ROOT / "scripts" / "render_k8s.py"
EKS_CLUSTER_CONFIG = REPO_ROOT / "deploy" / "eks" / "cluster.yaml"
HELM_CLI = Path(__file__).resolve().parent / "helm_cli.py"

# The release the walk-through installs: `helm upgrade --install credit-pd ... -n credit-pd`.
RELEASE = "credit-pd"
NAMESPACE = "credit-pd"
# The S3 model option as docs/deploy.md sets it (example bucket, account and version).
S3_VALUES: dict[str, Any] = {
    "modelFromS3": {
        "enabled": True,
        "uri": "s3://credit-pd-models-111122223333/credit-pd/credit_pd_model-2wqrvxdo3k2ygaav.bentomodel",
        "region": "eu-west-1",
    },
    "serviceAccount": {"awsRoleArn": "arn:aws:iam::111122223333:role/credit-pd-credit-pd-model-reader"},
}
INSTALL_HINT = (
    "deploy tools not installed: run `make deploy-tools` (= python3.11 -m venv .venv-deploy && "
    ".venv-deploy/bin/pip install -r requirements-deploy.txt)"
)
# Whole-tool time limits: a hung tool fails its test instead of stalling the suite.
TOOL_TIMEOUT_S = 120


@dataclass(frozen=True)
class DeployTools:
    """Paths of the deploy venv's tools."""

    bin_dir: Path

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    @property
    def checkov(self) -> Path:
        return self.bin_dir / "checkov"

    @property
    def kubernetes_validate(self) -> Path:
        return self.bin_dir / "kubernetes-validate"


@dataclass
class HelmResult:
    """One `helm template` run: exit code, stderr and the rendered objects."""

    returncode: int
    stderr: str
    objects: list[dict[str, Any]] = field(default_factory=list)


def run_tool(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool, capture text output, never hang the suite."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, **kwargs)


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a manifest stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


class Helm:
    """Real Helm (v4 Go SDK via helm-python-sdk) driven through tests/deploy/helm_cli.py."""

    def __init__(self, tools: DeployTools, scratch: Path) -> None:
        self.tools = tools
        self.scratch = scratch
        self._files = 0

    def values_file(self, values: dict[str, Any]) -> Path:
        """Write values to a file, as a user would pass them with -f."""
        self._files += 1
        path = self.scratch / f"values-{self._files}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def _value_args(self, files: tuple[Path, ...], values: dict[str, Any] | None) -> list[str | Path]:
        args: list[str | Path] = []
        for path in files + ((self.values_file(values),) if values else ()):
            args += ["-f", path]
        return args

    def template(self, *files: Path, values: dict[str, Any] | None = None, release: str = RELEASE) -> HelmResult:
        """`helm template RELEASE CHART -n NAMESPACE -f ...` (hooks such as helm tests included)."""
        result = run_tool(
            [
                self.tools.python,
                HELM_CLI,
                "template",
                release,
                CHART_DIR,
                "-n",
                NAMESPACE,
                *self._value_args(files, values),
            ]
        )
        objects = parse_manifests(result.stdout) if result.returncode == 0 else []
        return HelmResult(result.returncode, result.stderr, objects)

    def render(self, *files: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rendered objects; fails the test when Helm refuses the values."""
        result = self.template(*files, values=values)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return result.objects

    def lint(self, *files: Path, values: dict[str, Any] | None = None, strict: bool = True) -> dict[str, Any]:
        """`helm lint [--strict]` report: {"messages": [{"severity", "path", "error"}], ...}."""
        result = run_tool(
            [
                self.tools.python,
                HELM_CLI,
                "lint",
                CHART_DIR,
                "--json",
                *(["--strict"] if strict else []),
                *self._value_args(files, values),
            ]
        )
        assert result.stdout.strip(), f"helm lint produced no report:\n{result.stderr}"
        return json.loads(result.stdout.splitlines()[-1])


def is_hook(obj: dict[str, Any]) -> bool:
    """Helm hooks (the `helm test` resources) are not part of the release's running objects."""
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None, hooks: bool = False) -> dict[str, Any]:
    """The one object of a kind (and name, when given), among the hooks or among the rest."""
    matches = [
        o
        for o in objects
        if o["kind"] == kind and is_hook(o) == hooks and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def service_pods(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod template."""
    return find(objects, "Deployment")["spec"]["template"]


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` objects (offline)."""
    result = run_tool([kubectl, "kustomize", directory])
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return parse_manifests(result.stdout)
