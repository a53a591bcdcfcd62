"""Saving the trained model to, and loading it from, the BentoML model store.

The store entry is the hand-over between training and serving: the booster (LightGBM text
format), the encoder and calibration as plain data, and metadata a reviewer reads with
`bentoml models get <tag>` without running any code: CV metrics, the schema, a hash of the
training data, library versions, calibration and training time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml.exceptions import NotFound

from credit_pd.config import MODEL_NAME
from credit_pd.errors import ModelNotFoundError
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema
from credit_pd.scoring_model import ScoringModel

SCORING_SPEC_KEY = "scoring_spec"
log = logging.getLogger(__name__)


def save_to_store(
    model: ScoringModel,
    metadata: Mapping[str, Any],
    labels: Mapping[str, str],
    name: str = MODEL_NAME,
    custom_objects: Mapping[str, Any] | None = None,
    store_dir: Path | None = None,
) -> bentoml.Model:
    """Store booster + scoring spec (+ any extra custom objects); returns the stored model.

    `store_dir` saves into a separate model store at that path instead of the real one: training
    stages its entry there and renames the finished version directory into the real store
    (`credit_pd.training.publish`), because BentoML writes `model.yaml` in place and a reader of
    a half-copied entry fails for the whole store.
    """
    objects = {**(custom_objects or {}), SCORING_SPEC_KEY: model.scoring_spec()}

    def save() -> bentoml.Model:
        return bentoml.lightgbm.save_model(
            name,
            model.booster,
            labels=dict(labels),
            metadata=dict(metadata),
            custom_objects=objects,
            signatures={"predict": {"batchable": True, "batch_dim": 0}},
        )

    if store_dir is None:
        return save()
    # BentoML has no API to save into another store than the configured one; its dependency-injection
    # provider's `patch` (a library internal) swaps the store for the duration of the save.
    provider = BentoMLContainer.model_store
    if not hasattr(provider, "patch"):
        raise RuntimeError(
            "BentoML's model store provider has no `patch` any more: cannot stage the model outside the store"
        )
    log.info("patch BentoML model store -> staging store %s (save_to_store): in effect", store_dir)
    with provider.patch(ModelStore(str(store_dir))):
        return save()


def model_store_dir() -> Path:
    """The real model store's folder (`$BENTOML_HOME/models`)."""
    return Path(BentoMLContainer.model_store_dir.get())


def get_stored_model(tag: str) -> bentoml.Model:
    """Resolve a tag (`name:version` or `name:latest`) with an actionable error when absent."""
    try:
        return bentoml.models.get(tag)
    except NotFound as exc:
        raise ModelNotFoundError(
            f"model {tag!r} is not in the BentoML model store (under $BENTOML_HOME, default ~/bentoml); "
            "run `python train.py` first, or set CREDIT_PD_MODEL_TAG to a tag listed by `bentoml models list`"
        ) from exc


def load_from_store(tag: str | bentoml.Model, num_threads: int = 1) -> ScoringModel:
    """Rebuild the exact scoring model that training saved.

    Its TreeSHAP tables are checked against LightGBM's pred_contrib on the stored example before
    it is returned (`ScoringModel.self_check`), so a service worker, replay or report never
    explains with tables that disagree with the booster beside them.
    """
    stored = tag if isinstance(tag, bentoml.Model) else get_stored_model(tag)
    booster = bentoml.lightgbm.load_model(stored)
    spec = stored.custom_objects[SCORING_SPEC_KEY]
    model = ScoringModel.from_parts(booster, spec, num_threads=num_threads)
    model.self_check()
    return model


class TagSource(str, Enum):
    """Where the served model tag came from (logged at start-up)."""

    PINNED = "pinned by CREDIT_PD_MODEL_TAG"
    BENTO = "recorded in the bento's bento.yaml"
    SOURCE_TREE = "the setting's default (served from the source tree)"
    BENTO_LAYOUT_MOVED = "the setting's default: a bento without bento.yaml beside src/ (BentoML's layout moved)"


def model_tag_to_serve(settings_tag: str, pinned_by_setting: bool, service_file: str | Path) -> tuple[str, TagSource]:
    """The model a service process serves, and why: `CREDIT_PD_MODEL_TAG` when set, else the bento's own.

    `bentoml build` records the model the service was built with in `bento.yaml`, one folder above
    the bento's `src/service.py` (a layout of BentoML's, not an API: a bento whose `src/` has no
    `bento.yaml` beside it is reported as moved). Served from the local bento store, BentoML
    resolves a `:latest` tag against the whole model store, so a bento built for one model would
    silently serve whatever was trained last. A built bento therefore serves its recorded model
    unless the deployment pins another (the chart's S3 option does); from the source tree the
    setting's default (`credit_pd_model:latest`) applies.
    """
    if pinned_by_setting:
        return settings_tag, TagSource.PINNED
    source_dir = Path(service_file).resolve().parent
    bento_yaml = source_dir.parent / "bento.yaml"
    if not bento_yaml.is_file():
        in_bento = source_dir.name == "src" and (source_dir.parent / "env").is_dir()
        return settings_tag, TagSource.BENTO_LAYOUT_MOVED if in_bento else TagSource.SOURCE_TREE
    info = yaml.safe_load(bento_yaml.read_text()) or {}
    name = settings_tag.split(":", 1)[0]
    recorded = [
        model["tag"]
        for service in info.get("services", [])
        for model in service.get("models", [])
        if str(model.get("tag", "")).split(":", 1)[0] == name
    ]
    return (recorded[0], TagSource.BENTO) if recorded else (settings_tag, TagSource.BENTO_LAYOUT_MOVED)


def stored_contract(stored: bentoml.Model) -> tuple[DatasetSchema, FeatureEncoder]:
    """The schema and encoder of a stored model, without loading its booster.

    The service builds its request model from these at import; the booster is loaded per worker.
    """
    spec = stored.custom_objects[SCORING_SPEC_KEY]
    if "schema" not in spec:
        raise ValueError("stored model carries no schema: it predates the stored-contract format; retrain it")
    return DatasetSchema.model_validate(spec["schema"]), FeatureEncoder.from_dict(spec["encoder"])
