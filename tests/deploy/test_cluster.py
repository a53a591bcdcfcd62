"""The chart's pods under a real container runtime: `podman kube play` of the rendered manifests.

Opt-in (`make cluster-test`): it needs root (rootful podman with its bridge network), podman,
and a few minutes (two training runs and an image build). It skips with a message otherwise.

What runs, each in its own podman pod, torn down (pods and volumes) after its checks:
  chart-default    the chart's default values (only the image points at the locally built one)
  kustomize-local  `kubectl kustomize k8s/overlays/local`, the generated overlay, unchanged
  chart-s3         the S3 model option: the initContainer imports a model exported to a local
                   S3-compatible server (moto_server, from the deploy venv, in its own pod on the
                   same podman network; modelFromS3.env points s3fs at it with AWS_ENDPOINT_URL_S3)
Inside each running pod (`podman exec`): /readyz, a real /predict whose PD equals train.py's for
the same row, uid 1034, a read-only root filesystem, no capabilities, no new privileges and the
rendered memory limit in the container's cgroup; the S3 pod must serve the S3 model's tag (a
second training run), not the baked one.

Only what is podman's own is changed before `podman kube play` (PODMAN_WORKAROUNDS below); the
manifests are otherwise exactly what Helm and kustomize render.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.deploy.deploy_tools import (
    K8S_LOCAL,
    LOCAL_VALUES,
    DeployTools,
    Helm,
    find,
    is_hook,
    kustomize,
    parse_manifests,
    run_tool,
)
from tests.deploy.podman_tools import (
    bentoml_env,
    build_bento,
    build_image,
    first_unlabelled_application,
    podman,
    predicted_pd,
    run,
    train,
    write_dataset,
)

RUN_HINT = ("cluster test is opt-in (root, podman, several minutes): run `make cluster-test`, or "
            "CREDIT_PD_CLUSTER_TEST=1 .venv/bin/python -m pytest tests/deploy/test_cluster.py -m integration")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CREDIT_PD_CLUSTER_TEST") != "1", reason=RUN_HINT),
]

# The image k8s/overlays/local names (helm/credit-pd/values-local.yaml).
LOCAL_IMAGE = yaml.safe_load(LOCAL_VALUES.read_text())["image"]
IMAGE_TAG = f"{LOCAL_IMAGE['repository']}:{LOCAL_IMAGE['tag']}"
IMAGE_VALUES = {"image": {"repository": LOCAL_IMAGE["repository"], "tag": LOCAL_IMAGE["tag"]}}
SERVICE_UID = 1034
READY_TIMEOUT_S = 240
S3_POD = "credit-pd-cluster-test-s3"
S3_BUCKET = "credit-pd-models"
S3_PORT = 5000
# This sandbox refuses podman's default rlimits ("error setting rlimit type 7"): containers.conf
# gives every container explicit ones (kube play has no per-container --ulimit), and runc is the
# runtime installed here. Machine facts, not podman bugs.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
"""
PODMAN_WORKAROUNDS = {
    # podman 4.3 gives init containers the pod's restartPolicy (Always), so a finished
    # initContainer is restarted until kube play times out: containers/podman#15631, fixed by
    # containers/podman#18481 (podman 4.6). Kubernetes runs init containers once whatever the
    # policy; OnFailure gives that under podman 4.3.
    "restartPolicy": "containers/podman#15631",
    # podman 4.3 refuses annotation values over 63 characters (the limit is for names):
    # containers/podman#21667, fixed by containers/podman#21699 (podman 5.0). The chart's
    # checksum/config annotation is a 64-character sha256.
    "annotation length": "containers/podman#21667",
}
# Not needed: the network. kube play puts the pods on its bridge network
# (podman-default-kube-network) as root; `--network host` would refuse the containerPorts
# ("PortMappings can only be used with Bridge"), and nothing here needs the host network: the
# checks run inside the pods, and the pods reach the S3 pod over that bridge.


def for_podman(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects with PODMAN_WORKAROUNDS applied, and a line per change made."""
    changed: list[str] = []
    result = []
    for original in objects:
        obj = copy.deepcopy(original)
        pod = obj["spec"]["template"] if obj["kind"] == "Deployment" else obj if obj["kind"] == "Pod" else None
        if pod is not None:
            name = obj["metadata"]["name"]
            if pod["spec"].get("initContainers") and pod["spec"].get("restartPolicy", "Always") == "Always":
                pod["spec"]["restartPolicy"] = "OnFailure"
                changed.append(f"{obj['kind']} {name}: restartPolicy OnFailure ({PODMAN_WORKAROUNDS['restartPolicy']})")
            annotations = pod["metadata"].get("annotations") or {}
            for key in [k for k, v in annotations.items() if len(str(v)) > 63]:
                del annotations[key]
                changed.append(f"{obj['kind']} {name}: pod annotation {key} dropped "
                               f"({PODMAN_WORKAROUNDS['annotation length']})")
        result.append(obj)
    return result, changed


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


# Runs inside the service container: the checks that must see the pod from the inside.
IN_POD_CHECKS = r'''
import json, os, sys, urllib.request
base = "http://127.0.0.1:3000"
application = json.load(sys.stdin)
out = {"readyz": urllib.request.urlopen(base + "/readyz", timeout=10).status}
request = urllib.request.Request(base + "/predict", data=json.dumps({"applications": application}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(request, timeout=60) as response:
    out["predict_status"] = response.status
    out["predict"] = json.load(response)
out["uid"], out["gid"] = os.getuid(), os.getgid()
try:
    open("/cluster-test-probe", "w")
    out["root_writable"] = True
except OSError as error:
    out["root_writable"] = False
    out["root_write_error"] = error.strerror
out["root_mount"] = [line.split()[3] for line in open("/proc/mounts") if line.split()[1] == "/"][-1]
status = dict(line.split(":", 1) for line in open("/proc/1/status") if ":" in line)
out["capabilities"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
out["no_new_privs"] = status["NoNewPrivs"].strip()
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    if os.path.exists(path):
        out["memory_limit"] = int(open(path).read().strip())
        break
print(json.dumps(out))
'''


class PodmanPods:
    """kube play / kube down of one manifest, with the checks run inside its service container."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env

    def play(self, name: str, objects: list[dict[str, Any]]) -> Path:
        manifest = self.workdir / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        self.down(manifest)  # a previous run's leftovers
        played = podman("kube", "play", str(manifest), env=self.env, timeout=300)
        assert played.returncode == 0, f"podman kube play {name}:\n{played.stdout}\n{played.stderr}"
        return manifest

    def down(self, manifest: Path) -> None:
        """Pods and their volumes (podman 4.3 turns each emptyDir into a named volume); fails
        when any of them is left."""
        objects = parse_manifests(manifest.read_text())
        podman("kube", "down", str(manifest), env=self.env, timeout=120)
        for obj in objects:
            pod = obj["spec"]["template"] if obj["kind"] == "Deployment" else obj if obj["kind"] == "Pod" else None
            if pod is None:
                continue
            pod_name = obj["metadata"]["name"] + ("-pod-0" if obj["kind"] == "Deployment" else "")
            podman("pod", "rm", "--force", pod_name, env=self.env, timeout=120)
            assert podman("pod", "exists", pod_name, env=self.env).returncode != 0, f"pod {pod_name} left"
            for volume in pod["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    podman("volume", "rm", "--force", volume["name"], env=self.env)
                    left = podman("volume", "exists", volume["name"], env=self.env)
                    assert left.returncode != 0, f"volume {volume['name']} left"

    def wait_ready(self, container: str, started: float) -> float:
        while True:
            state = podman("inspect", "--format", "{{.State.Status}}", container, env=self.env)
            if state.returncode == 0 and state.stdout.strip() == "running":
                probe = podman("exec", container, "python", "-c",
                               "import urllib.request as u; print(u.urlopen('http://127.0.0.1:3000/readyz', timeout=2).status)",
                               env=self.env, timeout=30)
                if probe.stdout.strip() == "200":
                    return time.monotonic() - started
            if time.monotonic() - started > READY_TIMEOUT_S:
                logs = podman("logs", container, env=self.env)
                pytest.fail(f"{container}: /readyz not 200 after {READY_TIMEOUT_S} s (state {state.stdout.strip()}):\n"
                            f"{(logs.stdout + logs.stderr)[-4000:]}")
            time.sleep(1)

    def checks(self, container: str, application: dict[str, Any]) -> dict[str, Any]:
        result = podman("exec", "-i", container, "python", "-c", IN_POD_CHECKS, env=self.env, timeout=120,
                        stdin=json.dumps(application))
        assert result.returncode == 0, f"checks in {container} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    values: dict[str, Any] = {}
    start = time.monotonic()
    yield values
    values["total_s"] = round(time.monotonic() - start, 1)
    print("\ncluster test report: " + json.dumps(values, indent=2, default=str))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    if os.geteuid() != 0:
        pytest.skip(f"cluster test needs root (rootful podman kube play with its bridge network). {RUN_HINT}")
    if shutil.which("podman") is None:
        pytest.skip(f"podman not found: `make cluster-test` installs it with apt-get as root. {RUN_HINT}")
    request.getfixturevalue("helm")  # skips without the deploy venv
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def pods(workdir: Path) -> PodmanPods:
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return PodmanPods(workdir, {**os.environ, "CONTAINERS_CONF": str(conf)})


@pytest.fixture(scope="module")
def build(workdir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Model A baked into the image; model B (a second, quick run) exported for the S3 option."""
    env = bentoml_env(workdir)
    dataset = write_dataset(workdir / "dataset.csv")
    started = time.monotonic()
    baked_tag, baked_predictions = train(dataset, workdir / "baked", env, "--folds", "2")
    bento = build_bento(workdir, env)
    report["train_and_bento_s"] = round(time.monotonic() - started, 1)
    seconds, size = build_image(bento, IMAGE_TAG, workdir, env)
    report["image"] = {"tag": IMAGE_TAG, "build_s": round(seconds, 1), "size_mb": round(size / 1e6),
                       "base": os.environ.get("BASE_IMAGE") or "the bentofile's (python:3.11-slim)"}
    s3_tag, s3_predictions = train(dataset, workdir / "s3", env, "--quick")
    assert s3_tag != baked_tag
    archive = workdir / "bucket" / f"credit_pd_model-{s3_tag.split(':')[1]}.bentomodel"
    archive.parent.mkdir()
    run([sys.executable, "-m", "bentoml", "models", "export", s3_tag, str(archive)], env=env,
        log=workdir / "export.log", timeout=300)
    application = first_unlabelled_application(dataset) | {"top_k": 3}
    return {"baked_tag": baked_tag, "s3_tag": s3_tag, "archive": archive, "application": application,
            "baked_pd": predicted_pd(baked_predictions, application["uuid"]),
            "s3_pd": predicted_pd(s3_predictions, application["uuid"])}


@pytest.fixture(scope="module")
def s3_server(pods: PodmanPods, build: dict[str, Any], report: dict[str, Any],
              deploy_tools: DeployTools) -> Iterator[str]:
    """moto_server in a pod of its own (the service image's Python with the deploy venv's moto
    mounted read-only), holding the exported archive; yields its endpoint on the pods' network."""
    purelib = run_tool([deploy_tools.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site = Path(purelib.stdout.strip())
    assert (site / "moto").is_dir(), f"moto not in the deploy venv ({site}): make deploy-tools"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": S3_POD},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "moto", "image": IMAGE_TAG,
            "command": ["python", "-m", "moto.server", "-H", "0.0.0.0", "-p", str(S3_PORT)],
            "env": [{"name": "PYTHONPATH", "value": "/moto"}],
            "volumeMounts": [{"name": "moto", "mountPath": "/moto", "readOnly": True},
                             {"name": "bucket", "mountPath": "/bucket", "readOnly": True}]}],
            "volumes": [{"name": "moto", "hostPath": {"path": str(site), "type": "Directory"}},
                        {"name": "bucket", "hostPath": {"path": str(build["archive"].parent), "type": "Directory"}}]},
    }
    manifest = pods.play("s3-server", [pod])
    try:
        container = f"{S3_POD}-moto"
        upload = ("import boto3, sys, time\n"
                  f"client = boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}', region_name='us-east-1',"
                  " aws_access_key_id='testing', aws_secret_access_key='testing')\n"
                  "for attempt in range(60):\n"
                  "    try:\n"
                  f"        client.create_bucket(Bucket='{S3_BUCKET}'); break\n"
                  "    except Exception:\n"
                  "        time.sleep(0.5)\n"
                  f"client.upload_file('/bucket/{build['archive'].name}', '{S3_BUCKET}', 'credit-pd/{build['archive'].name}')\n"
                  f"print(client.list_objects_v2(Bucket='{S3_BUCKET}')['KeyCount'])\n")
        uploaded = podman("exec", container, "python", "-c", upload, env=pods.env, timeout=120)
        assert uploaded.returncode == 0 and uploaded.stdout.strip() == "1", uploaded.stderr[-3000:]
        address = podman("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         podman("pod", "inspect", "--format", "{{.InfraContainerID}}", S3_POD, env=pods.env).stdout.strip(),
                         env=pods.env).stdout.strip()
        assert address, "the S3 pod has no address on the kube network"
        report["s3_server"] = f"moto_server at {address}:{S3_PORT}, s3://{S3_BUCKET}/credit-pd/{build['archive'].name}"
        yield f"http://{address}:{S3_PORT}"
    finally:
        pods.down(manifest)


def run_scenario(name: str, objects: list[dict[str, Any]], pods: PodmanPods, build: dict[str, Any],
                 report: dict[str, Any]) -> dict[str, Any]:
    """kube play the objects, wait for /readyz, run the in-pod checks, tear down. The `helm test`
    hooks are left out: they are not part of the running release (and need cluster DNS)."""
    playable, changes = for_podman([o for o in objects if not is_hook(o)])
    deployment = find(playable, "Deployment")
    container_spec = deployment["spec"]["template"]["spec"]["containers"][0]
    container = f"{deployment['metadata']['name']}-pod-0-{container_spec['name']}"
    started = time.monotonic()
    manifest = pods.play(name, playable)
    try:
        ready_s = pods.wait_ready(container, started)
        checks = pods.checks(container, build["application"])
        [answer] = checks["predict"]
        report[name] = {"podman_workarounds": changes, "ready_s": round(ready_s, 1),
                        "readyz": checks["readyz"], "predict_status": checks["predict_status"],
                        "model_tag": answer["model_tag"], "pd": answer["pd"], "uid": checks["uid"],
                        "root": checks["root_mount"].split(",")[0], "root_write": checks.get("root_write_error"),
                        "capabilities": checks["capabilities"], "no_new_privs": checks["no_new_privs"],
                        "memory_limit": checks.get("memory_limit")}
        checks["limits"] = container_spec["resources"]["limits"]
        return checks
    finally:
        pods.down(manifest)


def assert_hardened_and_serving(checks: dict[str, Any], application: dict[str, Any], model_tag: str,
                                expected_pd: float) -> None:
    assert checks["readyz"] == 200
    assert checks["predict_status"] == 200
    [answer] = checks["predict"]
    assert answer["uuid"] == application["uuid"]
    assert answer["model_tag"] == model_tag
    assert answer["pd"] == pytest.approx(expected_pd, rel=1e-9, abs=1e-15), "PD differs from train.py's"
    assert len(answer["explanation"]["contributions"]) == 3
    assert (checks["uid"], checks["gid"]) == (SERVICE_UID, SERVICE_UID)
    assert checks["root_writable"] is False and checks["root_mount"].split(",")[0] == "ro"
    assert set(checks["capabilities"].values()) == {"0000000000000000"}, checks["capabilities"]
    assert checks["no_new_privs"] == "1"
    assert checks["memory_limit"] == memory_bytes(checks["limits"]["memory"])


def test_chart_defaults_run_under_podman(helm: Helm, pods: PodmanPods, build: dict[str, Any],
                                         report: dict[str, Any]) -> None:
    objects = helm.render(values=IMAGE_VALUES)
    checks = run_scenario("chart-default", objects, pods, build, report)
    assert_hardened_and_serving(checks, build["application"], build["baked_tag"], build["baked_pd"])


def test_kustomize_local_overlay_runs_under_podman(kubectl: str, pods: PodmanPods, build: dict[str, Any],
                                                   report: dict[str, Any]) -> None:
    objects = kustomize(kubectl, K8S_LOCAL)
    assert service_image(objects) == IMAGE_TAG
    checks = run_scenario("kustomize-local", objects, pods, build, report)
    assert_hardened_and_serving(checks, build["application"], build["baked_tag"], build["baked_pd"])


def test_s3_model_option_serves_the_s3_model(helm: Helm, pods: PodmanPods, build: dict[str, Any], s3_server: str,
                                             report: dict[str, Any]) -> None:
    values = {**IMAGE_VALUES, "config": {"model_tag": build["s3_tag"]}, "modelFromS3": {
        "enabled": True, "uri": f"s3://{S3_BUCKET}/credit-pd/{build['archive'].name}", "region": "us-east-1",
        "env": [{"name": "AWS_ENDPOINT_URL_S3", "value": s3_server},
                {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"}]}}
    checks = run_scenario("chart-s3", helm.render(values=values), pods, build, report)
    assert build["s3_tag"] != build["baked_tag"]
    assert_hardened_and_serving(checks, build["application"], build["s3_tag"], build["s3_pd"])


def service_image(objects: list[dict[str, Any]]) -> str:
    return find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_podman_workarounds_touch_only_what_podman_needs(helm: Helm) -> None:
    """Guard: the podman copy differs from the rendering only in the named workarounds."""
    values = {"modelFromS3": {"enabled": True, "uri": "s3://bucket/prefix/m.bentomodel"},
              "config": {"model_tag": "credit_pd_model:abc"}}
    objects = [o for o in helm.render(values=values) if not is_hook(o)]
    playable, changes = for_podman(objects)
    assert len(changes) == 2, changes
    original, changed = find(objects, "Deployment"), find(playable, "Deployment")
    changed["spec"]["template"]["spec"]["restartPolicy"] = original["spec"]["template"]["spec"].get("restartPolicy")
    if changed["spec"]["template"]["spec"]["restartPolicy"] is None:
        del changed["spec"]["template"]["spec"]["restartPolicy"]
    changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] = \
        original["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert changed == original
    assert [o for o in playable if o["kind"] != "Deployment"] == [o for o in objects if o["kind"] != "Deployment"]
