"""Saving the trained model to, and loading it from, the BentoML model store.

The store entry is the hand-over between training and serving: the booster (LightGBM text
format), the encoder and calibration as plain data, and metadata a reviewer reads with
`bentoml models get <tag>` without running any code: CV metrics, the schema, a hash of the
training data, library versions, calibration and training time.
"""

from __future__ import annotations

from typing import Any, Mapping

import bentoml
from bentoml.exceptions import NotFound

from credit_pd.config import MODEL_NAME
from credit_pd.errors import ModelNotFoundError
from credit_pd.scoring_model import ScoringModel

SCORING_SPEC_KEY = "scoring_spec"


def save_to_store(model: ScoringModel, metadata: Mapping[str, Any], labels: Mapping[str, str], name: str = MODEL_NAME) -> bentoml.Model:
    """Store booster + scoring spec; returns the stored model (its `.tag` names the version)."""
    return bentoml.lightgbm.save_model(
        name,
        model.booster,
        labels=dict(labels),
        metadata=dict(metadata),
        custom_objects={SCORING_SPEC_KEY: model.scoring_spec()},
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
    )


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
