"""The trained artefact: GLM part (optional) + booster(s) + feature encoder + probability calibration.

One object scores for `train.py`, the benchmark, the service, the batch job and monitoring, so a
PD computed anywhere is the same number. The raw score (log-odds) of every model family is

    raw = offset + w_linear x GLM log-odds + sum_k w_k x booster_k log-odds

- `trees`: one booster, no GLM (offset 0, weight 1);
- `GLM`: the logistic regression alone (the booster holds zero trees);
- `GLM-offset`: trees boosted from the GLM's logit (LightGBM `init_score`), weights 1 and 1;
- `blend`: the GLM and one or two tree models, non-negative weights chosen on out-of-fold scores.

Explanations are exact and additive in that log-odds for every family: the GLM part contributes
coefficient x (design value - training mean) per feature (`credit_pd.linear`), each booster its
exact TreeSHAP, and a blend the weighted sum; base value + contributions = the raw score. The
calibrated PD is a monotone map of the raw score, so the ranking of contributions carries over.
Non-negative weights keep the monotone features' direction of every member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.special import expit

from credit_pd.explanation import DEFAULT_MAX_REASONS, RankedReasons, ReasonCodes, row_sums
from credit_pd.features import FeatureEncoder
from credit_pd.linear import LinearModel
from credit_pd.master_scale import MasterScale
from credit_pd.schema import DatasetSchema
from credit_pd.treeshap import TableCheck, TablesTooLarge, TreeShapTables, UnsupportedModel, verify_tables

FAMILIES = ("trees", "GLM", "GLM-offset", "blend")


@dataclass(frozen=True)
class PlattCalibrator:
    """PD = sigmoid(slope * raw_log_odds + intercept).

    Platt scaling on the booster's log-odds, fitted on out-of-fold scores: it corrects the small
    over-confidence a refit on all rows has, keeps the PD monotone in the SHAP-explained score,
    and with two parameters cannot overfit ~1,000 positives the way isotonic regression can.
    Fitting lives in the training wing (`credit_pd.training.fit.fit_platt`), so scikit-learn
    stays out of the bento.
    """

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw_score: np.ndarray) -> np.ndarray:
        return expit(self.slope * np.asarray(raw_score, dtype=np.float64) + self.intercept)


@dataclass(frozen=True)
class BlendWeights:
    """raw = offset + linear x GLM log-odds + trees[k] x booster k's log-odds (k = 0 is `booster`)."""

    offset: float = 0.0
    linear: float = 1.0
    trees: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "linear": self.linear, "trees": list(self.trees)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlendWeights:
        return cls(
            offset=float(data["offset"]), linear=float(data["linear"]), trees=tuple(float(w) for w in data["trees"])
        )


def combined_raw_score(
    matrix: np.ndarray,
    linear: LinearModel | None,
    boosters: Sequence[lgb.Booster],
    weights: BlendWeights,
    num_threads: int,
) -> np.ndarray:
    """offset + w_linear x GLM log-odds + sum_k w_k x booster_k log-odds: the raw score of every family.

    `ScoringModel.raw_score` is this; training scores its out-of-fold models with it before a
    schema-carrying `ScoringModel` exists.
    """
    raw = np.full(len(matrix), weights.offset)
    if linear is not None:
        raw += weights.linear * linear.raw_score(matrix)
    for weight, booster in zip(weights.trees, boosters, strict=False):
        if booster.num_trees():
            raw += weight * np.asarray(booster.predict(matrix, raw_score=True, num_threads=num_threads))
    return raw


@dataclass(frozen=True)
class Explanation:
    """Exact additive explanation of a batch: raw log-odds = base_value + contributions.sum(axis=1)."""

    base_value: np.ndarray  # (n_rows,)
    contributions: np.ndarray  # (n_rows, n_features)

    @property
    def raw_score(self) -> np.ndarray:
        return self.base_value + row_sums(self.contributions)


@dataclass(frozen=True)
class Decision:
    """What a lender acts on for a batch: PD, grade and principal reasons, with the explanation behind them.

    The arrays are what the batch job writes as columns; `grade` and `reasons` are the same as
    Python lists (built on first use), what the service answers and replay compares.
    """

    explanation: Explanation
    pd: np.ndarray  # (n_rows,)
    grade_index: np.ndarray  # (n_rows,) 0-based position in `scale`
    ranked: RankedReasons
    scale: MasterScale
    codes: ReasonCodes

    @cached_property
    def grade(self) -> list[str]:
        names = self.scale.names
        return [names[i] for i in self.grade_index.tolist()]

    @cached_property
    def reasons(self) -> list[list[dict[str, Any]]]:
        """Per row: ranked {code, text, contribution, features}."""
        return self.codes.as_dicts(self.ranked)


@dataclass(frozen=True)
class ScoringModel:
    """Everything needed to turn a feature matrix into calibrated PDs and their explanations.

    `schema` is the dataset schema the model was trained on (with its example application): the
    service builds its request contract from it, so a stored model always carries its own API.
    `booster` is the model store's booster (zero trees for a GLM); `linear`, `extra_boosters`
    and `weights` make the hybrid families (see the module docstring).
    """

    booster: lgb.Booster
    encoder: FeatureEncoder
    calibrator: PlattCalibrator
    schema: DatasetSchema
    num_threads: int = 1
    linear: LinearModel | None = None
    extra_boosters: tuple[lgb.Booster, ...] = ()
    weights: BlendWeights = BlendWeights()
    family: str = "trees"
    # Table TreeSHAP per booster (credit_pd.treeshap), built at training (`with_tree_tables`) and
    # stored in the spec; () or a None entry: that booster is explained with pred_contrib.
    tree_tables: tuple[TreeShapTables | None, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model family {self.family!r} is not one of {FAMILIES}")
        if self.tree_tables and len(self.tree_tables) != 1 + len(self.extra_boosters):
            raise ValueError(f"{len(self.tree_tables)} TreeSHAP tables for {1 + len(self.extra_boosters)} boosters")
        if len(self.weights.trees) != 1 + len(self.extra_boosters):
            raise ValueError(f"{len(self.weights.trees)} tree weights for {1 + len(self.extra_boosters)} boosters")
        if self.family != "trees" and self.linear is None:
            raise ValueError(f"a {self.family} model needs its GLM part")
        for booster in self.boosters:
            if tuple(booster.feature_name()) != self.encoder.feature_names:
                raise ValueError(
                    "booster and encoder disagree on feature order: "
                    f"{booster.feature_name()[:3]}... vs {list(self.encoder.feature_names)[:3]}..."
                )

    @property
    def boosters(self) -> tuple[lgb.Booster, ...]:
        return (self.booster, *self.extra_boosters)

    @property
    def n_trees(self) -> int:
        """Trees over all boosters (0 for a GLM)."""
        return sum(booster.num_trees() for booster in self.boosters)

    def describe(self) -> str:
        """One line a reviewer reads: "GLM-offset, 180 trees", "blend of GLM x 0.620 + trees x 0.410 (96 trees)"."""
        trees = [booster.num_trees() for booster in self.boosters]
        if self.family == "GLM":
            return "GLM (logistic regression), no trees"
        if self.family == "blend":
            members = [f"GLM x {self.weights.linear:.3f}"] + [
                f"trees x {w:.3f} ({n} trees)" for w, n in zip(self.weights.trees, trees, strict=False)
            ]
            return "blend of " + " + ".join(members)
        return f"{self.family}, {trees[0]} trees"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.encoder.feature_names

    def raw_score(self, matrix: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """Uncalibrated log-odds; `num_threads` overrides the model's thread count for this call."""
        return combined_raw_score(matrix, self.linear, self.boosters, self.weights, num_threads or self.num_threads)

    def predict_pd(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated PD from the explained raw score, so PD and explanation always agree."""
        return self.calibrator.apply(self.raw_score(matrix))

    def explain(self, matrix: np.ndarray, num_threads: int | None = None) -> Explanation:
        """Exact contributions per schema feature: GLM part + weighted TreeSHAP of each booster.

        `num_threads` as in `raw_score`. Members are summed with the same weights `raw_score`
        uses, so base value + contributions = raw score for every family.
        """
        threads = num_threads or self.num_threads
        base = np.full(len(matrix), self.weights.offset)
        contributions = np.zeros((len(matrix), len(self.feature_names)))
        if self.linear is not None:
            linear_base, linear_contributions = self.linear.explain(matrix)
            base += self.weights.linear * linear_base
            contributions += self.weights.linear * linear_contributions
        for index, (weight, booster) in enumerate(zip(self.weights.trees, self.boosters, strict=True)):
            if booster.num_trees():
                tree_base, tree_contributions = self._tree_contributions(index, matrix, threads)
                base += weight * tree_base
                contributions += weight * tree_contributions
        return Explanation(base_value=base, contributions=contributions)

    def _tree_contributions(self, index: int, matrix: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact TreeSHAP of booster `index`: (expected value per row, (n_rows, n_features) contributions).

        The one place the trees' part is explained: the booster's precomputed tables when it has
        them (~10x LightGBM's speed on one thread, verified against it at training and start-up),
        else LightGBM's native TreeSHAP (pred_contrib; its last column is the expected value).
        """
        tables = self.tree_tables[index] if self.tree_tables else None
        if tables is not None:
            tree_base, contributions = tables.explain(matrix)
            return np.full(len(contributions), tree_base), contributions
        contrib = np.asarray(self.boosters[index].predict(matrix, pred_contrib=True, num_threads=threads))
        return contrib[:, -1], contrib[:, :-1]

    def with_tree_tables(self) -> ScoringModel:
        """This model with table TreeSHAP for every booster whose tables fit (training builds them once).

        A booster whose tables would be too large, or of a kind the tables do not cover, keeps
        pred_contrib (None in `tree_tables`).
        """
        tables: list[TreeShapTables | None] = []
        for booster in self.boosters:
            try:
                tables.append(TreeShapTables.from_booster(booster))
            except (TablesTooLarge, UnsupportedModel):
                tables.append(None)
        return replace(self, tree_tables=tuple(tables))

    def verify_tree_tables(
        self, matrix: np.ndarray, tol: float = 1e-9, num_threads: int | None = None
    ) -> list[TableCheck]:
        """Check every booster's tables against its pred_contrib on `matrix` (contributions, base value,
        base + sum = raw score); raises `credit_pd.treeshap.TableMismatchError` beyond `tol`."""
        if not self.tree_tables:
            return []  # no tables: every booster is explained by pred_contrib itself
        threads = num_threads or self.num_threads
        return [
            verify_tables(tables, booster, matrix, tol=tol, num_threads=threads)
            for booster, tables in zip(self.boosters, self.tree_tables, strict=True)
            if tables is not None
        ]

    def self_check(self) -> list[TableCheck]:
        """The start-up check of a loaded model: its tables reproduce pred_contrib, and the GLM part's
        code tables the design's own sums, on the stored example application and on an application
        with every field missing."""
        example = self.schema.example or {}
        matrix = self.encoder.encode_records([example, {}])
        if self.linear is not None:
            self.linear.check_code_tables(matrix)
        return self.verify_tree_tables(matrix)

    @cached_property
    def reason_codes(self) -> ReasonCodes:
        """The stored schema's reason codes as arrays (built once per loaded model)."""
        return ReasonCodes.from_schema(self.schema)

    @cached_property
    def master_scale(self) -> MasterScale:
        return self.schema.resolved_master_scale()

    def decide(
        self, matrix: np.ndarray, max_reasons: int | Sequence[int] = DEFAULT_MAX_REASONS, num_threads: int | None = None
    ) -> Decision:
        """PD, grade and reasons of every row: the one path the service, the batch job and replay share.

        Reasons need the explanation, so every row is explained (exact TreeSHAP), and the PD is
        computed from the explained raw score, so PD, grade and reasons always agree.
        """
        explanation = self.explain(matrix, num_threads)
        pds = self.calibrator.apply(explanation.raw_score)
        return Decision(
            explanation=explanation,
            pd=pds,
            grade_index=self.master_scale.grade_index(pds),
            ranked=self.reason_codes.ranked(explanation.contributions, max_reasons),
            scale=self.master_scale,
            codes=self.reason_codes,
        )

    def scoring_spec(self) -> dict[str, Any]:
        """The non-booster parts as plain data, stored beside the booster in the model store."""
        spec = {
            "schema": self.schema.model_dump(mode="json", exclude_none=True),
            "encoder": self.encoder.to_dict(),
            "calibration": {"method": "platt", "slope": self.calibrator.slope, "intercept": self.calibrator.intercept},
            "family": self.family,
            "blend": self.weights.to_dict(),
        }
        if self.linear is not None:
            spec["linear"] = self.linear.to_dict()
        if self.extra_boosters:
            # LightGBM's own text format, as the store keeps the main booster.
            spec["extra_boosters"] = [booster.model_to_string() for booster in self.extra_boosters]
        if self.tree_tables:
            # numpy arrays per booster (None: pred_contrib), so every reader of the spec (service,
            # batch executors, replay) explains with the tables training verified.
            spec["treeshap_tables"] = [None if t is None else t.to_arrays() for t in self.tree_tables]
        return spec

    @classmethod
    def from_parts(cls, booster: lgb.Booster, spec: Mapping[str, Any], num_threads: int = 1) -> ScoringModel:
        """Rebuild from a booster and `scoring_spec()`; checks the two agree on the columns."""
        encoder = FeatureEncoder.from_dict(spec["encoder"])
        if tuple(booster.feature_name()) != encoder.feature_names:
            raise ValueError(
                "booster and encoder disagree on feature order: "
                f"{booster.feature_name()[:3]}... vs {list(encoder.feature_names)[:3]}..."
            )
        if "schema" not in spec:
            raise ValueError("stored model carries no schema: it predates the stored-contract format; retrain it")
        schema = DatasetSchema.model_validate(spec["schema"])
        if tuple(schema.feature_names) != encoder.feature_names:
            raise ValueError("stored schema and encoder disagree on the features; the model entry is inconsistent")
        calibration = spec["calibration"]
        calibrator = PlattCalibrator(slope=calibration["slope"], intercept=calibration["intercept"])
        linear = LinearModel.from_dict(spec["linear"]) if "linear" in spec else None
        if linear is not None and linear.design.n_features != len(encoder.feature_names):
            raise ValueError(
                f"stored GLM part expects {linear.design.n_features} features, the encoder has {len(encoder.feature_names)}"
            )
        extra = tuple(lgb.Booster(model_str=text) for text in spec.get("extra_boosters", ()))
        weights = BlendWeights.from_dict(spec["blend"]) if "blend" in spec else BlendWeights()
        tables = tuple(
            None if arrays is None else TreeShapTables.from_arrays(arrays) for arrays in spec.get("treeshap_tables", ())
        )
        return cls(
            booster=booster,
            encoder=encoder,
            calibrator=calibrator,
            schema=schema,
            num_threads=num_threads,
            linear=linear,
            extra_boosters=extra,
            weights=weights,
            family=spec.get("family", "trees"),
            tree_tables=tables,
        )
