"""checkov finds nothing in the chart (frameworks helm) or the manifests (framework kustomize).

checkov renders the chart with `helm template` and k8s/ with `kubectl kustomize`, then runs its
Kubernetes policies. Its helm framework needs a `helm` command: here that is tests/deploy/helm_cli.py
(real Helm via helm-python-sdk) behind a wrapper script on PATH. HELM_NAMESPACE gives the release
the walk-through's namespace, as `helm install -n credit-pd` does (otherwise CKV_K8S_21 flags the
`default` namespace, which the chart never hard-codes).

Zero failed checks; a skipped check is allowed only when the manifest names it with a reason
(`checkov.io/skipN: CKV_...=reason` annotations) and it is one of ALLOWED_SKIPS below.
checkov runs once per target (module-scoped fixture): it takes a few seconds each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import (
    CHART_DIR,
    HELM_CLI,
    K8S_DIR,
    NAMESPACE,
    PRODUCTION_VALUES,
    S3_VALUES,
    SITE_VALUES,
    DeployTools,
    run_tool,
)

# Four checkov runs of a few seconds each: excluded from `make test-fast`.
pytestmark = pytest.mark.slow

# (kind, check) pairs a manifest may skip; each skip's reason is written in the manifest itself.
ALLOWED_SKIPS = {
    # Service Deployment: IfNotPresent with pinned immutable tags (15) and tag without digest (43)
    # are chart requirements (image.digest makes both pass); uid 1034 is the image's user (40).
    ("Deployment", "CKV_K8S_15"),
    ("Deployment", "CKV_K8S_40"),
    ("Deployment", "CKV_K8S_43"),
    # The one-shot `helm test` pod: no probes (8, 9), plus the same image reasons.
    ("Pod", "CKV_K8S_8"),
    ("Pod", "CKV_K8S_9"),
    ("Pod", "CKV_K8S_15"),
    ("Pod", "CKV_K8S_40"),
    ("Pod", "CKV_K8S_43"),
}
TARGETS = ("chart-default", "chart-production", "chart-s3-model", "kustomize")


def kind_of(resource: str) -> str:
    """`Deployment.ns.name` or `overlay:overlays/eks:Deployment.ns.name` -> `Deployment`."""
    return resource.rsplit(":", 1)[-1].split(".", 1)[0]


def checkov_args(target: str, scratch: Path) -> list[str | Path]:
    if target == "kustomize":
        return ["-d", K8S_DIR, "--framework", "kustomize"]
    args: list[str | Path] = ["-d", CHART_DIR, "--framework", "helm"]
    if target in ("chart-production", "chart-s3-model"):
        args += ["--var-file", PRODUCTION_VALUES, "--var-file", SITE_VALUES]
    if target == "chart-s3-model":
        s3_values = scratch / "s3-model-values.yaml"
        s3_values.write_text(yaml.safe_dump(S3_VALUES))
        args += ["--var-file", s3_values]
    return args


def helm_wrapper(tools: DeployTools, directory: Path) -> Path:
    """A `helm` executable for checkov: helm_cli.py on the deploy venv's Python."""
    wrapper = directory / "helm"
    wrapper.write_text(f'#!/bin/sh\nexec "{tools.python}" "{HELM_CLI}" "$@"\n')
    wrapper.chmod(0o755)
    return directory


@pytest.fixture(scope="module", params=TARGETS)
def scan(
    request: pytest.FixtureRequest, deploy_tools: DeployTools, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One checkov run: its JSON report for the target."""
    if request.param == "kustomize":
        request.getfixturevalue("kubectl")  # skips without kubectl
    scratch = tmp_path_factory.mktemp(f"checkov-{request.param}")
    env = {
        **os.environ,
        "PATH": f"{helm_wrapper(deploy_tools, scratch)}{os.pathsep}{os.environ.get('PATH', '')}",
        "HELM_NAMESPACE": NAMESPACE,
    }
    result = run_tool(
        [deploy_tools.checkov, *checkov_args(request.param, scratch), "--skip-download", "-o", "json"],
        env=env,
        cwd=scratch,
    )
    assert result.stdout.strip().startswith(("{", "[")), f"checkov gave no JSON report:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    (report,) = reports if isinstance(reports, list) else [reports]
    report["stderr"] = result.stderr
    return report


def test_no_failed_checks(scan: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in scan["results"]["failed_checks"]
    ]
    assert failed == []
    assert scan["summary"]["parsing_errors"] == 0


def test_skips_are_named_with_a_reason(scan: dict[str, Any]) -> None:
    for check in scan["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert (kind_of(check["resource"]), check["check_id"]) in ALLOWED_SKIPS, check["resource"]
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} skipped without a reason"


def test_scan_covered_the_workloads(scan: dict[str, Any]) -> None:
    """A chart that fails to render makes checkov scan nothing and report nothing: rule that out."""
    checked = scan["results"]["passed_checks"] + scan["results"]["skipped_checks"]
    kinds = {kind_of(c["resource"]) for c in checked}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds, scan["stderr"][-3000:]
    assert scan["summary"]["passed"] > 50
