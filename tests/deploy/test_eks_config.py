"""deploy/eks and docs/deploy.md: the cluster config, the IAM policy and the walk-through agree.

No AWS account is reachable here, so these check structure and consistency: names that must match
across eksctl, IAM, the chart and the docs (a mismatch only shows up as AccessDenied on a live
cluster), and that every placeholder the files use is exported in the walk-through.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import EKS_CLUSTER_CONFIG, NAMESPACE, REPO_ROOT, find

POLICY = REPO_ROOT / "deploy" / "eks" / "s3-model-read-policy.json"
DOCS = REPO_ROOT / "docs" / "deploy.md"
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(EKS_CLUSTER_CONFIG.read_text())


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text()


def model_reader(cluster: dict[str, Any]) -> dict[str, Any]:
    (account,) = [a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["namespace"] == NAMESPACE]
    return account


def test_cluster_has_irsa_and_nodes_in_several_zones(cluster: dict[str, Any]) -> None:
    assert (cluster["apiVersion"], cluster["kind"]) == ("eksctl.io/v1alpha5", "ClusterConfig")
    assert cluster["iam"]["withOIDC"] is True
    (group,) = cluster["managedNodeGroups"]
    assert len(set(group["availabilityZones"])) >= 2
    assert group["minSize"] >= len(set(group["availabilityZones"]))
    assert {a["name"] for a in cluster["addons"]} >= {"vpc-cni", "metrics-server"}
    vpc_cni = next(a for a in cluster["addons"] if a["name"] == "vpc-cni")
    assert json.loads(vpc_cni["configurationValues"])["enableNetworkPolicy"] == "true"


def test_irsa_role_trusts_the_charts_service_account(cluster: dict[str, Any], default_objects: list[dict]) -> None:
    """The role trusts <namespace>/<name>; the chart's account for release credit-pd must be that one."""
    account = model_reader(cluster)
    chart_account = find(default_objects, "ServiceAccount")["metadata"]
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == (chart_account["name"], chart_account["namespace"])
    assert account["roleOnly"] is True  # the chart creates and annotates the ServiceAccount


def test_walkthrough_uses_the_role_and_policy_names_of_the_cluster_config(cluster: dict[str, Any], docs: str) -> None:
    account = model_reader(cluster)
    (policy_arn,) = account["attachPolicyARNs"]
    policy_name = policy_arn.rsplit("/", 1)[1]
    assert f"--policy-name {policy_name}" in docs
    assert f"role/{account['roleName']}" in docs
    assert "deploy/eks/s3-model-read-policy.json" in docs


def test_s3_policy_is_read_only_on_the_model_prefix() -> None:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    get = next(s for s in policy["Statement"] if "s3:GetObject" in s["Action"])
    assert get["Effect"] == "Allow" and get["Resource"] == ["arn:aws:s3:::${MODEL_BUCKET}/${MODEL_PREFIX}/*"]
    listing = next(s for s in policy["Statement"] if "s3:ListBucket" in s["Action"])
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["${MODEL_PREFIX}/*"]


def test_every_placeholder_is_exported_in_the_walkthrough(docs: str) -> None:
    used = set(PLACEHOLDER.findall(EKS_CLUSTER_CONFIG.read_text())) | set(PLACEHOLDER.findall(POLICY.read_text()))
    exported = set(re.findall(r"^export ([A-Z_]+)=", docs, flags=re.MULTILINE))
    assert used and used <= exported, f"not exported in docs/deploy.md: {sorted(used - exported)}"


def test_walkthrough_covers_every_step(docs: str) -> None:
    for command in ("aws ecr create-repository", "bentoml containerize credit_pd_service:latest",
                    "aws ecr get-login-password", "docker push", "eksctl create cluster -f",
                    "eks/aws-load-balancer-controller", "helm upgrade --install credit-pd helm/credit-pd",
                    "-f helm/credit-pd/values-production.yaml", "bentoml models export", "modelFromS3.enabled=true",
                    "kubectl -n $NAMESPACE get ingress", "port-forward", "scripts/predict_client.py --url",
                    "curl -sS -X POST", "helm test credit-pd", "eksctl delete cluster",
                    "ingress.https.certificateArn=$CERTIFICATE_ARN", "ingress.auth.cognito.userPoolArn=$USER_POOL_ARN",
                    "aws acm request-certificate", "aws cognito-idp create-user-pool", "make k8s", "make cluster-test"):
        assert command in docs, command


def test_production_network_policy_names_the_clusters_vpc(cluster: dict[str, Any]) -> None:
    """values-production.yaml admits the ALB by the VPC's CIDR: the one this cluster config creates."""
    production = yaml.safe_load((REPO_ROOT / "helm" / "credit-pd" / "values-production.yaml").read_text())
    cidrs = [peer["ipBlock"]["cidr"] for peer in production["networkPolicy"]["ingressFrom"] if "ipBlock" in peer]
    assert cidrs == [cluster["vpc"]["cidr"]]
