"""The chart's optional batch part: a SparkApplication (spark-operator v1beta2), its ServiceAccount
(IRSA), Role and RoleBinding, validated offline, plus the IAM policy and the docs that go with it.

The SparkApplication is checked strictly against the operator's own API schema (kubeflow-spark-api,
tests/deploy/spark_application_schema.py); the built-in objects with kubernetes-validate --strict.
Its arguments are parsed by batch_score.py's own argument parser, so chart and CLI cannot drift.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from credit_pd.batch.cli import parse_args
from tests.deploy.deploy_tools import REPO_ROOT, DeployTools, Helm, find, run_tool

SCHEMA_CHECK = Path(__file__).resolve().parent / "spark_application_schema.py"
BATCH_POLICY = REPO_ROOT / "deploy" / "eks" / "batch-s3-policy.json"
BATCH_DOCS = REPO_ROOT / "docs" / "batch.md"
ROLE_ARN = "arn:aws:iam::111122223333:role/credit-pd-batch-scorer"
# A real run's values, as docs/batch.md passes them: the chart renders the batch part only with all of them.
RUN_VALUES: dict[str, Any] = {
    "awsRoleArn": ROLE_ARN,
    "image": {"repository": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/credit-pd-batch", "tag": "2026.11.1"},
    "modelTag": "credit_pd_model:2wqrvxdo3k2ygaav",
    "input": "s3a://credit-pd-batch-111122223333/books/2026-11/book.csv",
    "output": "s3a://credit-pd-batch-111122223333/scores/2026-11",
}
BATCH_VALUES: dict[str, Any] = {"batch": {"enabled": True, **RUN_VALUES}}
BATCH_KINDS = {"SparkApplication", "ServiceAccount", "Role", "RoleBinding"}


@pytest.fixture(scope="module")
def batch_objects(helm: Helm) -> list[dict[str, Any]]:
    objects = helm.render(values=BATCH_VALUES)
    return [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "batch"]


@pytest.fixture(scope="module")
def application(batch_objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(batch_objects, "SparkApplication")


def schema_problems(tools: DeployTools, objects: list[dict[str, Any]], workdir: Path) -> list[str]:
    manifest = workdir / "spark-applications.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = run_tool([tools.python, SCHEMA_CHECK, manifest])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_batch_is_off_by_default(default_objects: list[dict[str, Any]]) -> None:
    assert not [
        o for o in default_objects if o["kind"] == "SparkApplication" or o["metadata"]["name"].endswith("-batch")
    ]


def test_enabling_batch_adds_exactly_its_objects(batch_objects: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in batch_objects) == sorted(BATCH_KINDS)


def test_spark_application_validates_against_the_operator_schema(
    deploy_tools: DeployTools, application: dict[str, Any], tmp_path: Path
) -> None:
    assert (application["apiVersion"], application["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    assert schema_problems(deploy_tools, [application], tmp_path) == []


def test_schema_check_catches_broken_applications(
    deploy_tools: DeployTools, application: dict[str, Any], tmp_path: Path
) -> None:
    """Guard against a vacuous pass: a misspelt field, a wrong type and a missing required field are reported."""
    spec = application["spec"]
    misspelt = {**application, "spec": {**spec, "executor": {**spec["executor"], "memroy": "2g"}}}
    wrong_type = {**application, "spec": {**spec, "executor": {**spec["executor"], "instances": "4"}}}
    missing = {**application, "spec": {k: v for k, v in spec.items() if k != "mainApplicationFile"}}
    wrong_kind = {**application, "apiVersion": "sparkoperator.k8s.io/v1alpha1"}
    problems = schema_problems(deploy_tools, [misspelt, wrong_type, missing, wrong_kind], tmp_path)
    assert any(
        "spec.executor: Additional properties are not allowed ('memroy' was unexpected)" in p for p in problems
    ), problems
    assert any("spec.executor.instances: '4'" in p for p in problems), problems
    assert any("'mainApplicationFile' is a required property" in p for p in problems), problems
    assert any("apiVersion: 'sparkoperator.k8s.io/v1beta2' was expected" in p for p in problems), problems
    assert len(problems) == 4


@pytest.mark.parametrize("version_index", [0, -1])
def test_built_in_batch_objects_validate_strictly(
    deploy_tools: DeployTools,
    batch_objects: list[dict[str, Any]],
    kube_versions: list[str],
    version_index: int,
    tmp_path: Path,
) -> None:
    objects = [o for o in batch_objects if o["kind"] != "SparkApplication"]
    manifest = tmp_path / "batch-objects.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = run_tool([deploy_tools.kubernetes_validate, "--strict", "-k", kube_versions[version_index], manifest])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed ") == len(objects) == 3


def test_arguments_are_what_batch_score_py_parses(application: dict[str, Any]) -> None:
    spec = application["spec"]
    assert spec["mainApplicationFile"].endswith("/batch_score.py") and spec["type"] == "Python"
    args = parse_args(spec["arguments"])
    assert args.input.startswith("s3a://") and args.output.startswith("s3a://")
    assert args.model_tag == "credit_pd_model:2wqrvxdo3k2ygaav"
    assert args.top_k == 10 and args.arrow_batch_size == 10_000
    assert spec["image"] == "111122223333.dkr.ecr.eu-west-1.amazonaws.com/credit-pd-batch:2026.11.1"


def test_jars_are_baked_into_the_image_not_fetched_at_submit(application: dict[str, Any]) -> None:
    """No Maven at submit time (egress, a writable Ivy cache): scripts/build_batch_image.sh bakes them."""
    assert "deps" not in application["spec"]
    script = (REPO_ROOT / "scripts" / "build_batch_image.sh").read_text()
    assert "hadoop-aws" in script and "software/amazon/awssdk/bundle" in script


@pytest.mark.parametrize("missing", ["awsRoleArn", "image.repository", "image.tag", "modelTag", "input", "output"])
def test_batch_renders_only_from_a_real_runs_values(helm: Helm, missing: str) -> None:
    values = json.loads(json.dumps(RUN_VALUES))
    parent, _, leaf = ("." + missing).rpartition(".")
    (values[parent[1:]] if parent else values)[leaf] = ""
    rendered = helm.template(values={"batch": {"enabled": True, **values}})
    assert rendered.returncode != 0
    assert f"batch.enabled needs batch.{missing}" in rendered.stderr


@pytest.mark.parametrize("tag", ["credit_pd_model:latest", "credit_pd_model"])
def test_batch_needs_a_pinned_model(helm: Helm, tag: str) -> None:
    rendered = helm.template(values={"batch": {**BATCH_VALUES["batch"], "modelTag": tag}})
    assert rendered.returncode != 0 and "batch.modelTag must pin a version" in rendered.stderr


def test_spark_pods_run_as_the_irsa_account_and_are_not_service_pods(
    batch_objects: list[dict[str, Any]], application: dict[str, Any]
) -> None:
    account = find(batch_objects, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE_ARN
    binding = find(batch_objects, "RoleBinding")
    assert binding["roleRef"]["name"] == find(batch_objects, "Role")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    for role in ("driver", "executor"):
        pod = application["spec"][role]
        assert pod["serviceAccount"] == account["metadata"]["name"]
        assert pod["labels"]["app.kubernetes.io/name"] == "credit-pd-batch"  # the Service selects credit-pd
        assert pod["podSecurityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["allowPrivilegeEscalation"] is False
    assert application["spec"]["hadoopConf"]["fs.s3a.aws.credentials.provider"].endswith(
        "WebIdentityTokenFileCredentialsProvider"
    )


@pytest.mark.parametrize(
    "values, wrong",
    [
        ({"batch": {"executor": {"instances": 0}}}, "/batch/executor/instances"),
        ({"batch": {"input": "s3://bucket/book/"}}, "/batch/input"),
        ({"batch": {"image": {"tag": "latest"}}}, "/batch/image/tag"),
        ({"batch": {"topK": 0}}, "/batch/topK"),
        ({"batch": {"awsRoleArn": "credit-pd-batch"}}, "/batch/awsRoleArn"),
    ],
    ids=["no-executors", "s3-not-s3a", "latest-tag", "top-k-zero", "role-not-an-arn"],
)
def test_schema_rejects_bad_batch_values(helm: Helm, values: dict, wrong: str) -> None:
    rendered = helm.template(values={"batch": {**BATCH_VALUES["batch"], **values["batch"]}})
    assert rendered.returncode != 0, f"helm template accepted {values}"
    assert wrong in rendered.stderr


def test_batch_policy_reads_the_input_and_writes_only_the_output_prefix() -> None:
    policy = json.loads(BATCH_POLICY.read_text())
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert statements["ReadTheBook"]["Action"] == ["s3:GetObject"]
    assert statements["ReadTheBook"]["Resource"] == ["arn:aws:s3:::${BATCH_BUCKET}/${BATCH_INPUT_PREFIX}/*"]
    write = statements["WriteScoresAndRejects"]
    assert "s3:PutObject" in write["Action"] and write["Resource"] == [
        "arn:aws:s3:::${BATCH_BUCKET}/${BATCH_OUTPUT_PREFIX}/*"
    ]
    assert not any("*" == a or a.endswith(":*") for s in statements.values() for a in s["Action"])


def test_docs_give_the_emr_on_eks_command_and_export_every_placeholder() -> None:
    docs = BATCH_DOCS.read_text()
    command = docs[docs.index("aws emr-containers start-job-run") :]
    for option in ("--virtual-cluster-id", "--name", "--execution-role-arn", "--release-label", "--job-driver"):
        assert option in command, option
    for field in ("sparkSubmitJobDriver", "entryPoint", "entryPointArguments", "sparkSubmitParameters"):
        assert field in command, field
    used = set(re.findall(r"\$\{([A-Z_]+)\}", BATCH_POLICY.read_text()))
    exported = set(re.findall(r"^export ([A-Z_]+)=", docs, flags=re.MULTILINE))
    assert used <= exported, f"not exported in docs/batch.md: {sorted(used - exported)}"
    assert "deploy/eks/batch-s3-policy.json" in docs
