"""The model a batch job ships to its executors: resolved and checked on the driver, rebuilt per task.

The driver resolves the tag in the BentoML model store and rebuilds the `ScoringModel` once, so a
missing or incompatible model fails before Spark does any work. What travels to the executors is
plain data (the booster in LightGBM's text format and the stored scoring spec: encoder,
calibration, schema), broadcast once per executor; executors need no model store, no BentoML and
no network path to S3 for the model.
"""

from __future__ import annotations

from pathlib import Path

import bentoml

from credit_pd.batch.shipped import ShippedModel
from credit_pd.errors import CreditPDError
from credit_pd.model_store import SCORING_SPEC_KEY, get_stored_model

# Framework modules a credit_pd entry is saved with (model_store.save_to_store: bentoml.lightgbm,
# which BentoML 1.4 records under either name) and the booster file BentoML writes in the entry
# (LightGBM's text format, whatever the extension: `saved_model.ubj` in BentoML 1.4).
STORED_MODULES = ("bentoml.lightgbm", "_bentoml_impl.frameworks.lightgbm")
BOOSTER_FILE = bentoml.lightgbm.MODEL_FILENAME


class IncompatibleModelError(CreditPDError):
    """The tag names a store entry that is not a credit_pd scoring model this code can rebuild."""


def ship_model(tag: str) -> ShippedModel:
    """Resolve `tag` and check it rebuilds; raises ModelNotFoundError or IncompatibleModelError."""
    stored = get_stored_model(tag)
    resolved = str(stored.tag)
    module = stored.info.module
    spec = stored.custom_objects.get(SCORING_SPEC_KEY) if module in STORED_MODULES else None
    booster_file = Path(stored.path_of(BOOSTER_FILE))
    if spec is None or not booster_file.is_file():
        raise IncompatibleModelError(
            f"model {resolved!r} is not a credit_pd scoring model (framework {module!r}, custom objects "
            f"{sorted(stored.custom_objects)}); expected a `python train.py` entry saved with bentoml.lightgbm "
            f"and a {SCORING_SPEC_KEY!r} object"
        )
    # The stored file's bytes, so executors parse exactly what `bentoml.lightgbm.load_model` parses.
    shipped = ShippedModel(model_tag=resolved, booster_text=booster_file.read_text(), spec=spec)
    try:
        # Rebuilds, and its TreeSHAP tables reproduce pred_contrib on the stored example (else
        # TableMismatchError before Spark does any work).
        shipped.rebuild().self_check()
    except (KeyError, ValueError, TypeError) as exc:
        raise IncompatibleModelError(f"model {resolved!r} cannot be rebuilt for batch scoring: {exc}") from exc
    return shipped
