"""Honest validation and the final fit: nested cross-validation over GLM, tree and hybrid candidates.

Stratified K-fold on the labelled rows. Inside each training fold, inner stratified k-fold CV
(`TrainingConfig.inner_folds`) scores every candidate on all of that fold's rows:

- `GLM`: L2 logistic regression on the documented design (`credit_pd.linear`), monotone signs
  enforced (`credit_pd.training.glm`);
- every tree shape of the grid (`TrainingConfig.shapes`), plain or boosted from the GLM's logit
  (`glm_offset`: LightGBM `init_score`); the round count is the one that minimises the inner
  folds' mean validation loss (early stopping per fold, as `lightgbm.cv` does with the mean
  curve); an offset shape whose best count is 0 trees *is* the GLM, so on the inner folds it
  cannot do worse than it;
- blends: the GLM and the best one or two tree candidates in logit space, non-negative weights
  fitted on the inner out-of-fold log-odds; their inner loss is cross-fitted (weights fitted on
  the other inner folds), so a blend is not favoured for fitting its weights on what scores it.

Each candidate's explanation cost is measured (model + exact explanation, CPU time per thread;
a blend or an offset model costs the sum of its members), and the candidate with the lowest
inner-CV log loss among those within `TrainingConfig.min_explained_rows_per_s` is refit on the
whole training fold with its cross-validated round count and scores the validation fold; the
fold's Platt calibrator is fitted on the chosen candidate's inner out-of-fold log-odds. The
validation fold influences nothing that scores it. The final model is chosen the same way, by
an inner CV on all labelled rows, refit on every labelled row and calibrated on that CV's
out-of-fold log-odds.

No class weights or resampling: the log-loss objective on the true class mix already targets
calibrated probabilities, which a lender needs for pricing and provisioning, not just ranking.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm

from credit_pd.config import TrainingConfig, TreeShape
from credit_pd.features import FeatureEncoder
from credit_pd.linear import LinearDesign, LinearModel
from credit_pd.schema import DatasetSchema
from credit_pd.scoring_model import BlendWeights, PlattCalibrator, ScoringModel, combined_raw_score
from credit_pd.training.glm import fit_glm
from credit_pd.training.metrics import ForecastMetrics, score_forecast, summarise_folds

GLM = "GLM"


@dataclass(frozen=True)
class CandidateResult:
    """One candidate scored by an inner CV: its pooled inner out-of-fold log loss, rounds and cost.

    `rounds` is the cross-validated tree count (0 for the GLM, and for an offset shape that kept
    no tree); `members` names a blend's tree candidates and `member_rounds` their counts;
    `fit_seconds` is the wall time its inner fits took.
    """

    name: str
    family: str
    inner_log_loss: float
    rounds: int
    explained_rows_per_s: float
    within_budget: bool
    shape: TreeShape | None = None
    members: tuple[str, ...] = ()
    member_rounds: tuple[int, ...] = ()
    fit_seconds: float = 0.0


@dataclass(frozen=True)
class InnerChoice:
    """What one inner CV decided: the chosen candidate, everything it scored, the chosen blend weights."""

    chosen: CandidateResult
    candidates: tuple[CandidateResult, ...]
    oof_raw: np.ndarray
    weights: BlendWeights | None
    calibrator: PlattCalibrator
    reason: str
    seconds: float


@dataclass(frozen=True)
class FoldResult:
    fold: int
    best_iteration: int
    calibrator: PlattCalibrator
    metrics: ForecastMetrics
    chosen: CandidateResult
    candidates: tuple[CandidateResult, ...]


@dataclass(frozen=True)
class ShapeChoice:
    """The final model's candidate and why: the inner-CV figures of every candidate on all labelled rows."""

    candidate: CandidateResult
    rounds: int
    reason: str
    mean_inner_log_loss: dict[str, float]
    explained_rows_per_s: dict[str, float]
    weights: BlendWeights | None
    calibrator: PlattCalibrator
    selection_seconds: float
    fit_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def shape(self) -> TreeShape | None:
        return self.candidate.shape


@dataclass(frozen=True)
class CrossValidationResult:
    """Out-of-fold forecasts for every labelled row, per-fold figures, and the final inner CV."""

    folds: list[FoldResult]
    oof_raw: np.ndarray
    oof_pd: np.ndarray
    pooled: ForecastMetrics
    final: InnerChoice
    # Wall time of the nested CV (every inner choice and the outer folds' refits, side by side in
    # `cv_processes` processes): what the choice costs.
    selection_seconds: float

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarise_folds([f.metrics for f in self.folds])

    @property
    def best_iterations(self) -> list[int]:
        return [f.best_iteration for f in self.folds]


@dataclass(frozen=True)
class FittedParts:
    """A refit candidate before it becomes a `ScoringModel` (which also needs the schema)."""

    family: str
    linear: LinearModel | None
    boosters: tuple[lgb.Booster, ...]
    weights: BlendWeights

    def as_scoring_model(
        self, encoder: FeatureEncoder, calibrator: PlattCalibrator, schema: DatasetSchema, num_threads: int
    ) -> ScoringModel:
        return ScoringModel(
            booster=self.boosters[0],
            extra_boosters=self.boosters[1:],
            linear=self.linear,
            weights=self.weights,
            family=self.family,
            encoder=encoder,
            calibrator=calibrator,
            schema=schema,
            num_threads=num_threads,
        )


@dataclass
class _TreeRun:
    """One shape on one inner fold: the early-stopped booster and its validation curve."""

    booster: lgb.Booster
    curve: np.ndarray
    valid_idx: np.ndarray
    offset_valid: np.ndarray | None
    seconds: float


def fit_platt(raw_score: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Platt scaling (unpenalised logistic regression on the log-odds); see `PlattCalibrator`."""
    model = LogisticRegression(C=np.inf).fit(np.asarray(raw_score).reshape(-1, 1), np.asarray(y))
    return PlattCalibrator(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))


def log_loss_of_raw(y: np.ndarray, raw: np.ndarray) -> float:
    """Mean log loss of log-odds `raw` (log(1 + e^raw) - y raw, computed without overflow)."""
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


def booster_params(encoder: FeatureEncoder, config: TrainingConfig, shape: TreeShape, seed: int) -> dict:
    """LightGBM parameters of one shape plus the schema's monotone constraints."""
    params = config.lightgbm.as_lightgbm(shape, seed=seed, num_threads=config.num_threads)
    if any(encoder.monotone_constraints):
        params["monotone_constraints"] = encoder.monotone_constraints
    return params


def make_dataset(
    matrix: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    reference: lgb.Dataset | None = None,
    init_score: np.ndarray | None = None,
) -> lgb.Dataset:
    """LightGBM dataset with the encoder's names and native categorical columns (`init_score`: the GLM's logit)."""
    return lgb.Dataset(
        matrix,
        label=y,
        feature_name=list(encoder.feature_names),
        categorical_feature=encoder.categorical_indices,
        reference=reference,
        init_score=init_score,
        free_raw_data=False,
        # One binned dataset serves every candidate shape, whose minimum leaf sizes differ.
        params={"feature_pre_filter": False},
    )


def empty_booster(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder) -> lgb.Booster:
    """A booster with zero trees (raw score 0, contributions 0): the store's booster of a GLM model."""
    return lgb.Booster({"objective": "binary", "verbosity": -1}, make_dataset(matrix[:2], y[:2], encoder))


def _seconds_per_row(
    work: Callable[[np.ndarray], object], matrix: np.ndarray, config: TrainingConfig, repeats: int
) -> float:
    """CPU seconds per row and thread of `work` on a batch of `explain_timing_rows` rows (best of `repeats`).

    CPU time of this process divided by the budget's cores (`budget_cores`): wall-clock time on a
    shared machine depends on what else runs, and the candidate chosen for the same data must not.
    TreeSHAP parallelises over rows, so CPU time / cores is the wall time the batch takes on that
    many free cores, whatever the thread count of the call that is timed.
    """
    batch = np.resize(matrix, (config.explain_timing_rows, matrix.shape[1])) if len(matrix) else matrix
    fastest = np.inf
    for _ in range(repeats):
        started = time.process_time()
        work(batch)
        fastest = min(fastest, (time.process_time() - started) / config.budget_cores)
    return max(fastest, 1e-9) / max(len(batch), 1)


def explained_rows_per_s(
    booster: lgb.Booster, matrix: np.ndarray, config: TrainingConfig, num_iteration: int | None = None, repeats: int = 3
) -> float:
    """Booster + exact TreeSHAP throughput on `budget_cores` cores (see `_seconds_per_row`)."""
    return 1.0 / _booster_seconds_per_row(booster, matrix, config, num_iteration, repeats)


def model_explained_rows_per_s(
    model: ScoringModel, matrix: np.ndarray, config: TrainingConfig, repeats: int = 3
) -> float:
    """A scoring model's raw score + exact explanation throughput, every part of it included."""

    def work(batch: np.ndarray) -> None:
        model.raw_score(batch, num_threads=config.num_threads)
        model.explain(batch, num_threads=config.num_threads)

    return 1.0 / _seconds_per_row(work, matrix, config, repeats)


def _booster_seconds_per_row(
    booster: lgb.Booster, matrix: np.ndarray, config: TrainingConfig, num_iteration: int | None, repeats: int = 3
) -> float:
    def work(batch: np.ndarray) -> None:
        booster.predict(batch, raw_score=True, num_iteration=num_iteration, num_threads=config.num_threads)
        booster.predict(batch, pred_contrib=True, num_iteration=num_iteration, num_threads=config.num_threads)

    return _seconds_per_row(work, matrix, config, repeats)


def _glm_seconds_per_row(linear: LinearModel, matrix: np.ndarray, config: TrainingConfig) -> float:
    def work(batch: np.ndarray) -> None:
        linear.raw_score(batch)
        linear.explain(batch)

    return _seconds_per_row(work, matrix, config, repeats=3)


def fit_glm_part(
    matrix: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    config: TrainingConfig,
    log1p: dict[str, bool | None] | None = None,
) -> LinearModel:
    """The GLM on its design, both learned from these rows only."""
    return fit_glm(matrix, y, LinearDesign.fit(matrix, encoder, log1p), encoder, penalty_c=config.glm_penalty_c)


def train_early_stopped(
    params: dict, train_set: lgb.Dataset, valid_set: lgb.Dataset, config: TrainingConfig
) -> tuple[lgb.Booster, np.ndarray]:
    """Boost until the validation loss has not improved for `early_stopping_rounds`; the booster and its curve."""
    evals: dict = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.lightgbm.max_boost_rounds,
        valid_sets=[valid_set],
        callbacks=[
            lgb.early_stopping(config.lightgbm.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(evals),
        ],
    )
    return booster, np.asarray(evals["valid_0"]["binary_logloss"])


def common_rounds(runs: list[_TreeRun], floor_loss: float | None) -> int:
    """The round count minimising the inner folds' row-weighted mean validation loss.

    As `lightgbm.cv` does, one count for all folds (the mean curve, over the rounds every fold
    ran). `floor_loss` is the loss at 0 trees (the GLM, for an offset shape): when no round beats
    it, the answer is 0.
    """
    length = min(len(run.curve) for run in runs)
    sizes = np.array([len(run.valid_idx) for run in runs], dtype=np.float64)
    mean_curve = sum(size * run.curve[:length] for size, run in zip(sizes, runs, strict=False)) / sizes.sum()
    best = int(np.argmin(mean_curve))
    if floor_loss is not None and floor_loss <= mean_curve[best]:
        return 0
    return best + 1


def fit_blend_weights(members: np.ndarray, y: np.ndarray) -> BlendWeights:
    """Offset + non-negative weights of the members' log-odds (column 0 the GLM) minimising log loss.

    A bounded logistic regression (scipy L-BFGS-B): weights >= 0 keep every member's monotone
    directions, and with an intercept and free scale the blend needs no convex constraint.
    """

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        raw = theta[0] + members @ theta[1:]
        residual = (1.0 / (1.0 + np.exp(-raw))) - y
        return log_loss_of_raw(y, raw), np.concatenate(([residual.mean()], members.T @ residual / len(y)))

    start = np.concatenate(([0.0], np.full(members.shape[1], 1.0 / members.shape[1])))
    bounds = [(None, None)] + [(0.0, None)] * members.shape[1]
    theta = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    return BlendWeights(offset=float(theta[0]), linear=float(theta[1]), trees=tuple(float(w) for w in theta[2:]))


def blend_raw(members: np.ndarray, weights: BlendWeights) -> np.ndarray:
    return weights.offset + weights.linear * members[:, 0] + members[:, 1:] @ np.asarray(weights.trees)


def inner_choice(
    matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig, seed: int
) -> InnerChoice:
    """Score every candidate by inner k-fold CV on these rows and choose within the explanation budget."""
    started = time.perf_counter()
    splits = list(StratifiedKFold(config.inner_folds, shuffle=True, random_state=seed).split(matrix, y))
    glm_oof = np.zeros(len(y))
    runs: dict[str, list[_TreeRun]] = {shape.name: [] for shape in config.shapes}
    glm_seconds, glm_cost = 0.0, 0.0
    for k, (fit_idx, valid_idx) in enumerate(splits):
        glm_started = time.perf_counter()
        glm = fit_glm_part(matrix[fit_idx], y[fit_idx], encoder, config)
        glm_seconds += time.perf_counter() - glm_started
        fit_offset, valid_offset = glm.raw_score(matrix[fit_idx]), glm.raw_score(matrix[valid_idx])
        glm_oof[valid_idx] = valid_offset
        if k == 0:
            glm_cost = _glm_seconds_per_row(glm, matrix[valid_idx], config)
        plain_train = make_dataset(matrix[fit_idx], y[fit_idx], encoder)
        plain_valid = make_dataset(matrix[valid_idx], y[valid_idx], encoder, reference=plain_train)
        offset_sets = None
        for shape in config.shapes:
            if shape.glm_offset and offset_sets is None:
                offset_train = make_dataset(matrix[fit_idx], y[fit_idx], encoder, init_score=fit_offset)
                offset_sets = (
                    offset_train,
                    make_dataset(
                        matrix[valid_idx], y[valid_idx], encoder, reference=offset_train, init_score=valid_offset
                    ),
                )
            train_set, valid_set = (
                (plain_train, plain_valid) if offset_sets is None or not shape.glm_offset else offset_sets
            )
            shape_started = time.perf_counter()
            booster, curve = train_early_stopped(
                booster_params(encoder, config, shape, seed + k), train_set, valid_set, config
            )
            runs[shape.name].append(
                _TreeRun(
                    booster,
                    curve,
                    valid_idx,
                    valid_offset if shape.glm_offset else None,
                    time.perf_counter() - shape_started,
                )
            )
    glm_loss = log_loss_of_raw(y, glm_oof)
    scored: list[tuple[CandidateResult, np.ndarray]] = [
        (_result(GLM, GLM, glm_loss, 0, glm_cost, config, fit_seconds=glm_seconds), glm_oof)
    ]
    costs = {GLM: glm_cost}
    for shape in config.shapes:
        result, oof, cost = _score_shape(shape, runs[shape.name], y, glm_oof, glm_loss, glm_cost, matrix, config)
        scored.append((result, oof))
        costs[shape.name] = cost
    scored.extend(_score_blends(scored, costs, y, splits, config))
    chosen_index, reason = pick_candidate([result for result, _ in scored], config)
    chosen, oof = scored[chosen_index]
    weights = None
    if chosen.family == "blend":
        members = np.column_stack([glm_oof, *(dict((r.name, o) for r, o in scored)[m] for m in chosen.members)])
        weights = fit_blend_weights(members, y)
        oof = blend_raw(members, weights)
    return InnerChoice(
        chosen=chosen,
        candidates=tuple(result for result, _ in scored),
        oof_raw=oof,
        weights=weights,
        calibrator=fit_platt(oof, y),
        reason=reason,
        seconds=time.perf_counter() - started,
    )


def _result(
    name: str,
    family: str,
    loss: float,
    rounds: int,
    seconds_per_row: float,
    config: TrainingConfig,
    shape: TreeShape | None = None,
    members: tuple[str, ...] = (),
    member_rounds: tuple[int, ...] = (),
    fit_seconds: float = 0.0,
) -> CandidateResult:
    rate = 1.0 / seconds_per_row
    return CandidateResult(
        name=name,
        family=family,
        inner_log_loss=loss,
        rounds=rounds,
        explained_rows_per_s=rate,
        within_budget=rate >= config.min_explained_rows_per_s,
        shape=shape,
        members=members,
        member_rounds=member_rounds,
        fit_seconds=fit_seconds,
    )


def _score_shape(
    shape: TreeShape,
    runs: list[_TreeRun],
    y: np.ndarray,
    glm_oof: np.ndarray,
    glm_loss: float,
    glm_cost: float,
    matrix: np.ndarray,
    config: TrainingConfig,
) -> tuple[CandidateResult, np.ndarray, float]:
    """A shape's common round count, pooled inner out-of-fold log-odds, loss and explanation cost."""
    rounds = common_rounds(runs, glm_loss if shape.glm_offset else None)
    oof = glm_oof.copy() if shape.glm_offset else np.zeros(len(y))
    if rounds:
        for run in runs:
            oof[run.valid_idx] += run.booster.predict(
                matrix[run.valid_idx], raw_score=True, num_iteration=rounds, num_threads=config.num_threads
            )
    first = runs[0]
    cost = _booster_seconds_per_row(first.booster, matrix[first.valid_idx], config, rounds) if rounds else 0.0
    if shape.glm_offset:
        cost += glm_cost
    family = "GLM-offset" if shape.glm_offset else "trees"
    result = _result(
        shape.name,
        family,
        log_loss_of_raw(y, oof),
        rounds,
        cost,
        config,
        shape=shape,
        fit_seconds=sum(run.seconds for run in runs),
    )
    return result, oof, cost


def _score_blends(
    scored: list[tuple[CandidateResult, np.ndarray]],
    costs: dict[str, float],
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    config: TrainingConfig,
) -> list[tuple[CandidateResult, np.ndarray]]:
    """GLM + the best one (and two) affordable plain tree candidates, with cross-fitted weights."""
    trees = sorted(
        (item for item in scored if item[0].family == "trees" and item[0].within_budget and item[0].rounds > 0),
        key=lambda item: item[0].inner_log_loss,
    )
    glm_oof = scored[0][1]
    blends = []
    for size in range(1, min(config.max_blend_trees, len(trees)) + 1):
        members = trees[:size]
        stacked = np.column_stack([glm_oof, *(oof for _, oof in members)])
        crossfit = np.zeros(len(y))
        for fit_idx, valid_idx in splits:
            crossfit[valid_idx] = blend_raw(stacked[valid_idx], fit_blend_weights(stacked[fit_idx], y[fit_idx]))
        names = tuple(result.name for result, _ in members)
        cost = costs[GLM] + sum(costs[name] for name in names)
        blends.append(
            (
                _result(
                    "blend: GLM + " + " + ".join(names),
                    "blend",
                    log_loss_of_raw(y, crossfit),
                    0,
                    cost,
                    config,
                    members=names,
                    member_rounds=tuple(result.rounds for result, _ in members),
                ),
                crossfit,
            )
        )
    return blends


def pick_candidate(results: list[CandidateResult], config: TrainingConfig) -> tuple[int, str]:
    """Lowest inner-CV log loss within the budget (the first listed on a tie); when none is within it, the cheapest."""
    floor = f"{config.min_explained_rows_per_s:,.0f} explained rows/s"
    affordable = [i for i, r in enumerate(results) if r.within_budget]
    if not affordable:
        cheapest = max(range(len(results)), key=lambda i: results[i].explained_rows_per_s)
        return cheapest, f"no candidate met the budget of {floor}; the cheapest was taken"
    best = min(affordable, key=lambda i: results[i].inner_log_loss)
    chosen = results[best]
    beaten = sorted(
        (r for r in results if not r.within_budget and r.inner_log_loss < chosen.inner_log_loss),
        key=lambda r: r.inner_log_loss,
    )
    glm = next((r for r in results if r.name == GLM), None)
    versus = (
        f"; {(chosen.inner_log_loss / glm.inner_log_loss - 1):+.2%} against the GLM alone"
        if glm is not None and chosen is not glm
        else ""
    )
    reason = (
        f"lowest inner-CV log loss ({chosen.inner_log_loss:.5f}) of {len(affordable)} candidates within the budget of "
        f"{floor}{versus}" + (f"; over budget with lower loss: {', '.join(r.name for r in beaten)}" if beaten else "")
    )
    if chosen.family == "GLM-offset" and chosen.rounds == 0:
        reason += "; early stopping kept no tree, so the model is the GLM"
    return best, reason


def refit_candidate(
    candidate: CandidateResult,
    weights: BlendWeights | None,
    matrix: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    config: TrainingConfig,
    seed: int,
    all_shapes: tuple[TreeShape, ...],
) -> FittedParts:
    """Fit the chosen candidate on all these rows with its cross-validated round counts."""

    def rounds_of(rounds: int) -> int:
        return max(1, int(round(rounds * config.final_rounds_multiplier)))

    def trees(shape: TreeShape, rounds: int, init_score: np.ndarray | None = None) -> lgb.Booster:
        return lgb.train(
            booster_params(encoder, config, shape, seed),
            make_dataset(matrix, y, encoder, init_score=init_score),
            num_boost_round=rounds_of(rounds),
        )

    if candidate.family == "trees":
        assert candidate.shape is not None, "a tree candidate names its shape"
        return FittedParts("trees", None, (trees(candidate.shape, candidate.rounds),), BlendWeights())
    glm = fit_glm_part(matrix, y, encoder, config)
    if candidate.family == GLM or (candidate.family == "GLM-offset" and candidate.rounds == 0):
        return FittedParts(GLM, glm, (empty_booster(matrix, y, encoder),), BlendWeights())
    if candidate.family == "GLM-offset":
        assert candidate.shape is not None, "a GLM-offset candidate names its tree shape"
        return FittedParts(
            "GLM-offset", glm, (trees(candidate.shape, candidate.rounds, glm.raw_score(matrix)),), BlendWeights()
        )
    if weights is None or len(weights.trees) != len(candidate.members):
        raise ValueError(f"blend {candidate.name!r} needs one weight per tree member")
    shapes = {shape.name: shape for shape in all_shapes}
    members = tuple(
        trees(shapes[name], rounds) for name, rounds in zip(candidate.members, candidate.member_rounds, strict=False)
    )
    return FittedParts("blend", glm, members, weights)


@dataclass(frozen=True)
class _FoldOutcome:
    """What one outer fold's job hands back: its figures and its validation rows' forecasts."""

    result: FoldResult
    valid_idx: np.ndarray
    raw: np.ndarray
    pd: np.ndarray


def outer_fold(
    matrix: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    encoder: FeatureEncoder,
    config: TrainingConfig,
    fold: int,
) -> _FoldOutcome:
    """Choose by inner CV on the training fold, refit the choice there, forecast the validation fold."""
    x_train, y_train = matrix[train_idx], y[train_idx]
    inner = inner_choice(x_train, y_train, encoder, config, seed=config.seed + fold)
    parts = refit_candidate(
        inner.chosen, inner.weights, x_train, y_train, encoder, config, config.seed + fold, config.shapes
    )
    raw = parts_raw_score(parts, matrix[valid_idx], config.num_threads)
    pd_ = inner.calibrator.apply(raw)
    metrics = score_forecast(y[valid_idx], pd_, config.ece_bins)
    trees = sum(b.num_trees() for b in parts.boosters)
    result = FoldResult(fold, trees, inner.calibrator, metrics, inner.chosen, inner.candidates)
    return _FoldOutcome(result, valid_idx, raw, pd_)


_THREAD_LIMITS: Any = None


def _one_thread_worker() -> None:
    """Nested-CV worker start-up: numpy's BLAS on one thread (LightGBM calls get num_threads=1)."""
    global _THREAD_LIMITS
    from threadpoolctl import threadpool_limits

    _THREAD_LIMITS = threadpool_limits(limits=1)  # kept: the limit lasts as long as this object


def side_by_side(calls: list[tuple[Callable[..., Any], tuple]], processes: int) -> Iterator[Any]:
    """The calls' results in order, computed in `processes` spawned processes (1: here, one by one).

    The pool lives only inside this generator: its workers have exited when the last result is
    out, so nothing of the nested CV outlives it (a train.py killed while publishing leaves no
    orphaned worker holding its output pipes)."""
    if processes <= 1:
        for function, args in calls:
            yield function(*args)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_one_thread_worker)
    try:
        futures = [pool.submit(function, *args) for function, args in calls]
        for future in futures:
            yield future.result()
    finally:  # also when a job failed or the caller stopped early: no job left to run, workers joined
        pool.shutdown(wait=True, cancel_futures=True)


def cross_validate(
    matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig, progress: bool = True
) -> CrossValidationResult:
    """Stratified K-fold with out-of-fold, calibrated forecasts for every labelled row.

    Each training fold chooses its candidate by inner CV and scores its validation fold with it;
    the same inner CV on all labelled rows chooses the final model (`choose_shape`). These six
    jobs share nothing, so they run in `config.cv_processes` processes (`side_by_side`), every LightGBM
    call in them on one thread: the results do not depend on the process count. The final choice,
    the largest job, goes first so that it does not finish last alone.
    """
    started = time.perf_counter()
    job_config = replace(config, num_threads=1)
    splits = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed).split(matrix, y)
    jobs: list[tuple[Callable[..., Any], tuple]] = [(inner_choice, (matrix, y, encoder, job_config, config.seed))]
    jobs += [
        (outer_fold, (matrix, y, train_idx, valid_idx, encoder, job_config, fold))
        for fold, (train_idx, valid_idx) in enumerate(splits, start=1)
    ]
    bar = tqdm(total=len(jobs), desc="nested cross-validation", unit="job", disable=not progress)
    outcomes = side_by_side(jobs, config.cv_processes)
    final: InnerChoice = next(outcomes)
    bar.set_postfix(final=final.chosen.name)
    bar.update()
    oof_raw, oof_pd = np.zeros(len(y)), np.zeros(len(y))
    folds: list[FoldResult] = []
    for outcome in outcomes:
        oof_raw[outcome.valid_idx], oof_pd[outcome.valid_idx] = outcome.raw, outcome.pd
        folds.append(outcome.result)
        metrics = outcome.result.metrics
        bar.set_postfix(fold=outcome.result.fold, auc=f"{metrics.roc_auc:.4f}", chosen=outcome.result.chosen.name)
        bar.update()
    bar.close()
    return CrossValidationResult(
        folds=folds,
        oof_raw=oof_raw,
        oof_pd=oof_pd,
        pooled=score_forecast(y, oof_pd, config.ece_bins),
        final=final,
        selection_seconds=time.perf_counter() - started,
    )


def parts_raw_score(parts: FittedParts, matrix: np.ndarray, num_threads: int) -> np.ndarray:
    """Raw score of refit parts, by the scoring model's own formula (`combined_raw_score`)."""
    return combined_raw_score(matrix, parts.linear, parts.boosters, parts.weights, num_threads)


def choose_shape(cv: CrossValidationResult, config: TrainingConfig) -> ShapeChoice:
    """The final candidate: chosen by the inner CV on all labelled rows (`cv.final`), as each fold chose its own."""
    final = cv.final
    candidate = final.chosen
    rounds = 0 if candidate.rounds == 0 else max(1, int(round(candidate.rounds * config.final_rounds_multiplier)))
    fit_seconds: dict[str, float] = {}
    for result in [c for f in cv.folds for c in f.candidates] + list(final.candidates):
        fit_seconds[result.name] = fit_seconds.get(result.name, 0.0) + result.fit_seconds
    return ShapeChoice(
        candidate=candidate,
        rounds=rounds,
        reason=final.reason,
        mean_inner_log_loss={c.name: c.inner_log_loss for c in final.candidates},
        explained_rows_per_s={c.name: c.explained_rows_per_s for c in final.candidates},
        weights=final.weights,
        calibrator=final.calibrator,
        selection_seconds=final.seconds,
        fit_seconds=fit_seconds,
    )


def fit_final_model(
    matrix: np.ndarray,
    y: np.ndarray,
    encoder: FeatureEncoder,
    cv: CrossValidationResult,
    config: TrainingConfig,
    schema: DatasetSchema,
    choice: ShapeChoice | None = None,
) -> ScoringModel:
    """Refit the chosen candidate on every labelled row; calibrate on its inner-CV out-of-fold log-odds."""
    choice = choice or choose_shape(cv, config)
    parts = refit_candidate(choice.candidate, choice.weights, matrix, y, encoder, config, config.seed, config.shapes)
    return parts.as_scoring_model(encoder, choice.calibrator, schema, config.num_threads)
