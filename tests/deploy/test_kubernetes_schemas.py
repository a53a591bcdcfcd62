"""Every rendered object validates strictly against the Kubernetes OpenAPI schemas.

kubernetes-validate --strict rejects unknown fields and wrong types, offline, for the chart's
Kubernetes floor (Chart.yaml kubeVersion) and the EKS cluster's version (deploy/eks/cluster.yaml).
CRD objects have no schema there: the ServiceMonitor (monitoring.coreos.com/v1) is checked
structurally in test_helm_chart.py instead, and any other unknown kind fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import DeployTools, run_tool

TARGETS = ("default_objects", "production_objects", "s3_objects", "base_objects", "eks_objects", "local_objects")
# API groups of CRDs that kubernetes-validate cannot know, with the reason each is skipped.
CRD_GROUPS = {
    "monitoring.coreos.com": "Prometheus Operator CRDs (ServiceMonitor, PrometheusRule); checked in test_helm_chart.py",
    "sparkoperator.k8s.io": "Spark Operator CRD (the chart's optional SparkApplication); checked in tests/batch",
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "SparkApplication"}


def split_crds(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(built-in objects, CRD objects)."""
    crds = [o for o in objects if o["apiVersion"].split("/")[0] in CRD_GROUPS]
    return [o for o in objects if o not in crds], crds


def validate(tools: DeployTools, objects: list[dict[str, Any]], version: str, workdir: Path) -> list[str]:
    """kubernetes-validate --strict over the objects; every line that is not a pass."""
    manifest = workdir / f"objects-{version}.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = run_tool([tools.kubernetes_validate, "--strict", "-k", version, manifest])
    problems = [
        line
        for line in result.stdout.splitlines() + result.stderr.splitlines()
        if line.strip() and not line.startswith("INFO")
    ]
    if not problems:
        passed = [line for line in result.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
        assert result.returncode == 0, result.stderr
        assert len(passed) == len(objects), f"validated {len(passed)} of {len(objects)} objects"
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_objects_validate_strictly(
    target: str, request: pytest.FixtureRequest, deploy_tools: DeployTools, kube_versions: list[str], tmp_path: Path
) -> None:
    objects, crds = split_crds(request.getfixturevalue(target))
    assert objects, f"{target} rendered nothing"
    assert {o["kind"] for o in crds} <= CRD_KINDS
    for version in kube_versions:
        assert validate(deploy_tools, objects, version, tmp_path) == [], f"{target} against Kubernetes {version}"


def test_validation_catches_a_broken_object(
    deploy_tools: DeployTools, default_objects: list[dict[str, Any]], kube_versions: list[str], tmp_path: Path
) -> None:
    """Guard against a vacuous pass: an unknown field and a wrong type are reported."""
    service = next(o for o in default_objects if o["kind"] == "Service")
    unknown_field = {**service, "spec": {**service["spec"], "portz": []}}
    wrong_type = {**service, "spec": {**service["spec"], "type": 3}}
    problems = validate(deploy_tools, [unknown_field], kube_versions[-1], tmp_path)
    assert any("'portz' was unexpected" in p for p in problems), problems
    problems = validate(deploy_tools, [wrong_type], kube_versions[-1], tmp_path)
    assert any("spec.type: 3 is not of type" in p for p in problems), problems
