"""Every tunable in one place, each with a default that works and a one-line reason.

Training settings are a frozen dataclass passed explicitly (tests shrink them). Serving settings
live in `credit_pd.serving.settings` (read from `CREDIT_PD_*` environment variables), so the
bento never needs the training defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_DATASET_PATH = DATA_DIR / "dataset.csv"
DEFAULT_PREDICTIONS_PATH = DATA_DIR / "test_predictions.csv"
DEFAULT_REPORT_DIR = PROJECT_ROOT / "reports"

# Name under which the model lives in the BentoML model store; the service loads `<name>:latest`.
MODEL_NAME = "credit_pd_model"
RANDOM_SEED = 20261124


@dataclass(frozen=True)
class SampleConfig:
    """Size and shape of the embedded default dataset."""

    n_rows: int = 100_000
    # Share of rows written with `default` = NA: the rows `train.py` must score.
    unlabelled_share: float = 0.10
    seed: int = RANDOM_SEED


@dataclass(frozen=True)
class LightGBMParams:
    """Depth-2 trees (4 leaves), many of them, strongly regularised.

    ~1.4% positives need strong regularisation, and depth drives exact-TreeSHAP cost
    (O(trees x leaves x depth^2)). Measured on the embedded sample (5-fold OOF, `make benchmark`):
    depth 2 gave log loss 0.04864 and 24.6k explained rows/s; 8 leaves/depth 4 gave 0.04873;
    31 leaves gave 0.04916 and 2.2k rows/s. Pairwise interactions still fit in depth 2."""

    learning_rate: float = 0.03
    num_leaves: int = 4
    max_depth: int = 2
    min_child_samples: int = 200
    min_sum_hessian_in_leaf: float = 1.0
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 10.0
    cat_smooth: float = 50.0
    min_data_per_group: int = 200
    max_cat_to_onehot: int = 8
    # Upper bound only; early stopping on an inner split of the training folds picks the count.
    max_boost_rounds: int = 3000
    early_stopping_rounds: int = 150

    def as_lightgbm(self, seed: int, num_threads: int) -> dict:
        """The parameter dict LightGBM's native API takes."""
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "min_sum_hessian_in_leaf": self.min_sum_hessian_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "cat_smooth": self.cat_smooth,
            "min_data_per_group": self.min_data_per_group,
            "max_cat_to_onehot": self.max_cat_to_onehot,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": num_threads,
            "verbosity": -1,
        }


@dataclass(frozen=True)
class TrainingConfig:
    """How the model is validated and fitted."""

    n_folds: int = 5
    # Share of each training fold held out for early stopping and the fold's calibrator.
    inner_validation_share: float = 0.2
    # The refit sees 1/(1 - inner share) more rows than the early-stopping fits; a modest
    # increase of the cross-validated round count is the usual correction.
    final_rounds_multiplier: float = 1.1
    # Equal-count bins for expected calibration error: with ~1.4% positives, equal-width bins
    # would put almost every row in the first bin and hide miscalibration.
    ece_bins: int = 10
    # Rows explained for the SHAP summary plot: enough for stable beeswarms, cheap to compute.
    shap_summary_rows: int = 5_000
    num_threads: int = 2
    seed: int = RANDOM_SEED
    lightgbm: LightGBMParams = field(default_factory=LightGBMParams)

    def quick(self) -> "TrainingConfig":
        """A rough, fast variant for smoke tests (`train.py --quick`): the figures mean little."""
        return replace(self, n_folds=2, shap_summary_rows=200,
                       lightgbm=replace(self.lightgbm, max_boost_rounds=60, early_stopping_rounds=15, min_child_samples=20))
