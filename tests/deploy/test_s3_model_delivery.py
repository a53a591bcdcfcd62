"""The S3 model option against real BentoML: the chart's initContainer script, then `bentoml serve`.

No cluster and no S3 here, so the pod is emulated on disk: a tiny bento with a baked model (v1)
laid out as `bentoml containerize` does (models/ inside the bento), an exported archive of another
version (v2) as a local file (the script passes the URI to `bentoml models import` untouched, and
fsspec treats s3:// and local paths alike), the rendered initContainer script run with the pod's
environment, and the service started from a copy of the bento whose models/ is the filled store,
which is what the pod's volume mount does. It must serve v2.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.deploy_tools import run_tool, service_pods
from tests.serving_process import bentoml_serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SERVICE = textwrap.dedent("""
    import os
    import bentoml

    @bentoml.service(name="tiny_model_service", workers=1)
    class TinyModelService:
        model = bentoml.models.BentoModel(os.environ.get("MODEL_TAG", "tiny_model:latest"))

        @bentoml.api
        def which(self) -> str:
            return str(self.model.tag) + " " + open(self.model.path_of("payload.txt")).read()
""")
SAVE_MODELS = textwrap.dedent("""
    import bentoml
    tags = []
    for payload in ("baked", "from-s3"):
        with bentoml.models.create("tiny_model") as model:
            open(model.path_of("payload.txt"), "w").write(payload)
        tags.append(str(model.tag))
    print(" ".join(tags))
""")


def bentoml_env(home: Path, **extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        **extra,
    }


def test_initcontainer_script_makes_the_service_serve_the_s3_model(s3_objects: list[dict], tmp_path: Path) -> None:
    pytest.importorskip("bentoml", reason="needs the app's environment (.venv) with bentoml")
    bentoml = Path(sys.executable).parent / "bentoml"
    store, project = tmp_path / "developer-home", tmp_path / "project"
    project.mkdir()
    (project / "tiny_service.py").write_text(SERVICE)
    (project / "bentofile.yaml").write_text('service: "tiny_service:TinyModelService"\ninclude: ["tiny_service.py"]\n')

    saved = run_tool([sys.executable, "-c", SAVE_MODELS], env=bentoml_env(store))
    assert saved.returncode == 0, saved.stderr
    baked, from_s3 = saved.stdout.split()
    built = run_tool([bentoml, "build", "-o", "tag"], cwd=project, env=bentoml_env(store, MODEL_TAG=baked))
    assert built.returncode == 0, built.stderr
    name, version = built.stdout.strip().rsplit("__tag__:", 1)[-1].split(":")
    bento_dir = store / "bentos" / name / version

    # The image: the bento plus its models/, as `bentoml containerize` lays it out.
    image_bento = tmp_path / "image" / "bento"
    shutil.copytree(bento_dir, image_bento)
    resolved = run_tool(
        [
            sys.executable,
            "-c",
            f"import bentoml; bentoml.models.BentoModel({baked!r}).resolve({str(image_bento / 'models')!r})",
        ],
        env=bentoml_env(store),
    )
    assert resolved.returncode == 0, resolved.stderr
    archive = tmp_path / "bucket" / f"{from_s3.replace(':', '-')}.bentomodel"
    archive.parent.mkdir()
    exported = run_tool([bentoml, "models", "export", from_s3, archive], env=bentoml_env(store))
    assert exported.returncode == 0, exported.stderr

    # The initContainer, with the chart's script and environment (paths moved under tmp_path).
    init = service_pods(s3_objects)["spec"]["initContainers"][0]
    model_store, init_home = tmp_path / "model-store-volume", tmp_path / "init-home"
    model_store.mkdir()
    init_home.mkdir()
    (init_home / "models").symlink_to(model_store)  # the model-store volume at BENTOML_HOME/models
    init_env = bentoml_env(
        init_home,
        TMPDIR=str(tmp_path),
        BENTO_MODELS=str(image_bento / "models"),
        MODEL_URI=str(archive),
        CREDIT_PD_MODEL_TAG=from_s3,
    )
    for attempt in ("first start", "restart with the volume kept"):
        ran = run_tool(init["command"], env=init_env)
        assert ran.returncode == 0, f"{attempt}: {ran.stdout}{ran.stderr}"
    wrong_tag = run_tool(init["command"], env={**init_env, "CREDIT_PD_MODEL_TAG": "tiny_model:notthere"})
    assert (
        wrong_tag.returncode != 0 and "tiny_model:notthere (config.model_tag) is not in the store" in wrong_tag.stderr
    )

    # The service container: the bento with the volume mounted over models/.
    served_bento = tmp_path / "pod" / "bento"
    shutil.copytree(image_bento, served_bento, ignore=shutil.ignore_patterns("models"))
    shutil.copytree(model_store, served_bento / "models")
    service_env = bentoml_env(tmp_path / "service-home", MODEL_TAG=from_s3, TMPDIR=str(tmp_path))
    with bentoml_serve(str(served_bento), service_env, tmp_path, tmp_path / "serve.log") as url:
        request = urllib.request.Request(f"{url}/which", data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read().decode()
    assert answer == f"{from_s3} from-s3", answer
