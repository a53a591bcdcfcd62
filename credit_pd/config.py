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

# Name under which the model lives in the BentoML model store, and the tag every wing reads when
# none is pinned (the service, the batch job and the drift report share this one default).
MODEL_NAME = "credit_pd_model"
DEFAULT_MODEL_TAG = f"{MODEL_NAME}:latest"
RANDOM_SEED = 20261124


@dataclass(frozen=True)
class SampleConfig:
    """Size and shape of the embedded default dataset."""

    n_rows: int = 100_000
    # Share of rows written with `default` = NA: the rows `train.py` must score.
    unlabelled_share: float = 0.10
    seed: int = RANDOM_SEED


@dataclass(frozen=True)
class TreeShape:
    """One candidate tree shape: tree size, regularisation, learning rate, sampling, starting point.

    Training tries each shape with inner cross-validation inside every training fold (early
    stopping on the inner folds' mean loss picks its round count) beside the plain GLM and the
    blends (`credit_pd.training.fit`), and keeps the candidate with the lowest inner-CV log loss
    among those whose exact explanation cost stays within budget
    (`TrainingConfig.min_explained_rows_per_s`). `glm_offset`: the trees are boosted from the
    GLM's logit (LightGBM `init_score`) instead of the base rate; when early stopping keeps no
    tree, the candidate is the GLM. `feature_fraction` / `bagging_fraction` override the shared
    sampling (`LightGBMParams`) for shapes that want more decorrelation."""

    name: str
    num_leaves: int
    max_depth: int
    min_child_samples: int
    lambda_l2: float
    learning_rate: float
    glm_offset: bool = False
    feature_fraction: float | None = None
    bagging_fraction: float | None = None

    @property
    def min_data_per_group(self) -> int:
        """Categorical groups as small as the shape's leaves may be."""
        return self.min_child_samples

    @property
    def cat_smooth(self) -> float:
        """Category statistics smoothed lightly, strongly for the largest leaves (rare defaults)."""
        return 50.0 if self.min_child_samples >= 200 else 10.0

    def describe(self) -> str:
        sampling = "".join(
            f", {label} {value:g}"
            for label, value in (
                ("feature fraction", self.feature_fraction),
                ("bagging fraction", self.bagging_fraction),
            )
            if value is not None
        )
        start = "boosted from the GLM's logit, " if self.glm_offset else ""
        return (
            f"{self.name}: {start}{self.num_leaves} leaves, depth {self.max_depth}, min {self.min_child_samples} rows per leaf, "
            f"L2 {self.lambda_l2:g}, learning rate {self.learning_rate:g}{sampling}"
        )


# The candidate grid. Depth is what the data decides (1 = additive stumps, as close as trees get
# to a logistic model; 2-4 = pairwise to four-way interactions), with small or large minimum
# leaves (small suits a thousand rows, large a hundred thousand with 1% defaults); the learning
# rate is lower for deeper trees, whose rounds each fit more. Measured with `make benchmark`.
# TreeSHAP cost grows as trees x leaves x depth^2, so the budget rules out the expensive ones.
# Inner CV fits every shape 18 times per run (5 outer folds + the final choice, 3 inner folds
# each), so learning rates are 0.08-0.2 and early-stopping patience 30, and the grid keeps 7
# shapes. Left out after measuring them on the embedded sample: "depth 3" and "depth 4" (16
# leaves) of the earlier grid and leaf-wise 15 and 31 leaves: never the best affordable
# candidate, each worse than the GLM alone in the inner CV, ~30 s of training each (31 leaves:
# 3,500 explained rows/s, over budget).
# Leaf-wise shapes (8-31 leaves, depth bounded at 5-6) grow the best leaf first, with stronger
# row/column subsampling; GLM-offset shapes start from the GLM's logit, so the trees only add
# what the logistic regression misses (interactions, thresholds), in few small trees.
DEFAULT_SHAPES: tuple[TreeShape, ...] = (
    TreeShape(
        "GLM-offset, depth 2",
        num_leaves=4,
        max_depth=2,
        min_child_samples=50,
        lambda_l2=10.0,
        learning_rate=0.05,
        glm_offset=True,
    ),
    TreeShape(
        "GLM-offset, 8 leaves",
        num_leaves=8,
        max_depth=4,
        min_child_samples=50,
        lambda_l2=10.0,
        learning_rate=0.05,
        glm_offset=True,
        feature_fraction=0.7,
        bagging_fraction=0.7,
    ),
    TreeShape("stumps", num_leaves=2, max_depth=1, min_child_samples=20, lambda_l2=10.0, learning_rate=0.2),
    TreeShape("depth 2", num_leaves=4, max_depth=2, min_child_samples=20, lambda_l2=10.0, learning_rate=0.1),
    TreeShape(
        "depth 2, large leaves", num_leaves=4, max_depth=2, min_child_samples=200, lambda_l2=10.0, learning_rate=0.08
    ),
    TreeShape(
        "depth 3, large leaves", num_leaves=8, max_depth=3, min_child_samples=100, lambda_l2=10.0, learning_rate=0.1
    ),
    TreeShape(
        "leaf-wise 8",
        num_leaves=8,
        max_depth=5,
        min_child_samples=50,
        lambda_l2=5.0,
        learning_rate=0.1,
        feature_fraction=0.7,
        bagging_fraction=0.7,
    ),
)


@dataclass(frozen=True)
class LightGBMParams:
    """What every candidate shape shares: sampling, categorical handling, the round budget.

    ~1.4% positives need regularised leaves (the shapes set size and L2); row and feature
    subsampling decorrelate the many small trees."""

    min_sum_hessian_in_leaf: float = 1.0
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    max_cat_to_onehot: int = 8
    # Upper bound only; early stopping on the inner folds' mean loss picks the count.
    max_boost_rounds: int = 3000
    # Patience of early stopping on each inner fold; the round count itself comes from the
    # folds' mean curve, so the patience only has to pass the minimum. 30 (with depth 2, large
    # leaves at learning rate 0.08 instead of 0.05) cut `python train.py` on the embedded sample
    # from 189 to 148 CPU seconds against 50, with equal or lower out-of-fold log loss on all three
    # benchmark datasets (measured with `make benchmark`).
    early_stopping_rounds: int = 30

    def as_lightgbm(self, shape: TreeShape, seed: int, num_threads: int) -> dict:
        """The parameter dict LightGBM's native API takes, for one candidate shape."""
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": shape.learning_rate,
            "num_leaves": shape.num_leaves,
            "max_depth": shape.max_depth,
            "min_child_samples": shape.min_child_samples,
            "lambda_l2": shape.lambda_l2,
            "min_sum_hessian_in_leaf": self.min_sum_hessian_in_leaf,
            "feature_fraction": self.feature_fraction if shape.feature_fraction is None else shape.feature_fraction,
            "bagging_fraction": self.bagging_fraction if shape.bagging_fraction is None else shape.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            # Categorical groups follow the shape's leaves: German credit has purposes with a dozen
            # loans, the embedded sample's merchant categories want the stronger smoothing.
            "cat_smooth": shape.cat_smooth,
            "min_data_per_group": shape.min_data_per_group,
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
    # Inner cross-validation inside each training fold (and on all labelled rows for the final
    # model): every candidate is scored on all the fold's rows, so the choice is not the noise of
    # one split; 3 folds keep training within ~2 minutes on 2 cores.
    inner_folds: int = 3
    # The refit sees inner_folds / (inner_folds - 1) times the rows of the early-stopping fits;
    # a modest increase of the cross-validated round count is the usual correction.
    final_rounds_multiplier: float = 1.15
    # L2 strength of the GLM part (scikit-learn's C, per row loss summed): mild, as the design is
    # scaled and has one column per frequent category level.
    glm_penalty_c: float = 1.0
    # A blend takes the GLM and up to this many of the best tree candidates (weights >= 0 fitted
    # on the inner out-of-fold log-odds), as one or two further candidates.
    max_blend_trees: int = 2
    # Equal-count bins for expected calibration error: with ~1.4% positives, equal-width bins
    # would put almost every row in the first bin and hide miscalibration.
    ece_bins: int = 10
    # Rows explained for the SHAP summary plot: enough for stable beeswarms, cheap to compute.
    shap_summary_rows: int = 5_000
    # LightGBM threads of the fits outside the nested CV (the final refit, checks, summaries).
    num_threads: int = 2
    # Processes for the nested CV. Its inner choices (one per outer fold, one on all labelled rows)
    # are independent, so they run side by side, and every LightGBM call in them runs on one
    # thread: the results are then the same for any process count (a test checks it), and two
    # processes on two cores take the nested CV to about half its one-process wall time. 1 runs
    # them one after another in this process.
    cv_processes: int = 2
    seed: int = RANDOM_SEED
    lightgbm: LightGBMParams = field(default_factory=LightGBMParams)
    shapes: tuple[TreeShape, ...] = DEFAULT_SHAPES
    # The explanation budget: model + exact TreeSHAP rows/s in-process on `budget_cores` cores
    # (batch of `explain_timing_rows`, timed in CPU seconds / cores, so neither machine load nor
    # the threads a fit happens to use change the choice). A shape below it is never chosen.
    min_explained_rows_per_s: float = 5_000.0
    budget_cores: int = 2
    explain_timing_rows: int = 1_000

    def quick(self) -> TrainingConfig:
        """A rough, fast variant for smoke tests (`train.py --quick`): the figures mean little."""
        shapes = tuple(s for s in self.shapes if s.name in ("GLM-offset, depth 2", "depth 2")) or self.shapes[:1]
        return replace(
            self,
            n_folds=2,
            inner_folds=2,
            shap_summary_rows=200,
            shapes=shapes,
            max_blend_trees=1,
            lightgbm=replace(self.lightgbm, max_boost_rounds=60, early_stopping_rounds=15),
        )
