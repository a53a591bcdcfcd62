"""Saving the trained model to, and loading it from, the BentoML model store.

The store entry is the hand-over between training and serving: the booster (LightGBM text
format), the encoder and calibration as plain data, and metadata a reviewer reads with
`bentoml models get <tag>` without running any code: CV metrics, the schema, a hash of the
training data, library versions, calibration and training time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml.exceptions import NotFound

from credit_pd.config import MODEL_NAME
from credit_pd.errors import ModelNotFoundError
from credit_pd.scoring_model import ScoringModel

SCORING_SPEC_KEY = "scoring_spec"


def save_to_store(model: ScoringModel, metadata: Mapping[str, Any], labels: Mapping[str, str], name: str = MODEL_NAME,
                  custom_objects: Mapping[str, Any] | None = None, store_dir: Path | None = None) -> bentoml.Model:
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
    with BentoMLContainer.model_store.patch(ModelStore(str(store_dir))):
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
    """Rebuild the exact scoring model that training saved."""
    stored = tag if isinstance(tag, bentoml.Model) else get_stored_model(tag)
    booster = bentoml.lightgbm.load_model(stored)
    spec = stored.custom_objects[SCORING_SPEC_KEY]
    return ScoringModel.from_parts(booster, spec, num_threads=num_threads)
