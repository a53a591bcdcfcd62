"""The one-page model card and its plots, written from the training run's own figures.

Everything shown is computed from out-of-fold forecasts (never from in-sample scores), so the
card tells a reviewer how the model behaves on rows it did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; training runs on headless machines and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import shap  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from credit_pd.master_scale import AMBER_BELOW, RED_BELOW  # noqa: E402
from credit_pd.scoring_model import ScoringModel  # noqa: E402
from credit_pd.training.facts import ModelFacts, ShapeFacts  # noqa: E402
from credit_pd.training.fit import CrossValidationResult  # noqa: E402
from credit_pd.training.publish import fault_point  # noqa: E402

FIGURE_SIZE = (5.0, 4.0)
FIGURE_DPI = 110
# Features shown in the SHAP summary: the card is one page, the rest are in the store metadata.
SHAP_SUMMARY_FEATURES = 12
# Reliability-curve bins: equal-count, as for the ECE, so every bin has enough defaults.
RELIABILITY_BINS = 10
REPORT_CARD = "model_card.md"


@dataclass(frozen=True)
class ReportInputs:
    """What the card needs from a training run."""

    y: np.ndarray
    cv: CrossValidationResult
    model: ScoringModel
    explain_matrix: np.ndarray
    explain_frame: pd.DataFrame
    facts: ModelFacts


def write_report(report_dir: Path, inputs: ReportInputs) -> Path:
    """Write the PNG plots and `model_card.md` into a folder; returns the card's path.

    The run writes into a staging folder that replaces the published one whole
    (`credit_pd.training.publish`), so a reader never sees a half-written card or plot.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_roc_pr(report_dir / "roc_pr.png", inputs.y, inputs.cv.oof_pd)
    fault_point("report_partly_staged")
    plot_reliability(report_dir / "calibration.png", inputs.y, inputs.cv.oof_pd)
    top_features = plot_shap_summary(
        report_dir / "shap_summary.png", inputs.model, inputs.explain_matrix, inputs.explain_frame
    )
    plot_grade_backtest(report_dir / "grades.png", inputs.facts.grade_backtest)
    card = report_dir / REPORT_CARD
    card.write_text(render_model_card(inputs, top_features))
    return card


def plot_roc_pr(path: Path, y: np.ndarray, pd_hat: np.ndarray) -> None:
    fpr, tpr, _ = roc_curve(y, pd_hat)
    precision, recall, _ = precision_recall_curve(y, pd_hat)
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGURE_SIZE[0] * 2, FIGURE_SIZE[1]))
    left.plot(fpr, tpr, label="model (out-of-fold)")
    left.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    left.legend(loc="lower right")
    right.plot(recall, precision, label="model (out-of-fold)")
    right.axhline(y.mean(), linestyle="--", color="grey", label=f"base rate {y.mean():.3%}")
    right.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    right.legend(loc="upper right")
    _save(fig, path)


def plot_reliability(path: Path, y: np.ndarray, pd_hat: np.ndarray) -> None:
    observed, predicted = calibration_curve(y, pd_hat, n_bins=RELIABILITY_BINS, strategy="quantile")
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    upper = max(observed.max(), predicted.max()) * 1.05
    ax.plot([0, upper], [0, upper], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(predicted, observed, marker="o", label="model (out-of-fold)")
    ax.set(xlabel="mean predicted PD (decile of PD)", ylabel="observed default rate", title="Reliability")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_shap_summary(path: Path, model: ScoringModel, matrix: np.ndarray, frame: pd.DataFrame) -> list[str]:
    """Beeswarm of exact TreeSHAP values; returns features by mean |SHAP|, largest first."""
    contributions = model.explain(matrix).contributions
    display = frame[list(model.feature_names)].apply(_plottable)
    shap.summary_plot(contributions, display, max_display=SHAP_SUMMARY_FEATURES, show=False, plot_size=(7, 5))
    _save(plt.gcf(), path)
    importance = np.abs(contributions).mean(axis=0)
    return [model.feature_names[i] for i in np.argsort(-importance)]


def plot_grade_backtest(path: Path, rows: list[dict]) -> None:
    """Mean predicted PD and observed default rate (with its Jeffreys interval) per master-scale grade."""
    shown = [r for r in rows if r["count"]]
    x = np.arange(len(shown))
    observed = np.array([r["observed_rate"] for r in shown])
    low = observed - np.array([r["interval_low"] for r in shown])
    high = np.array([r["interval_high"] for r in shown]) - observed
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    ax.plot(
        x,
        [r["mean_pd"] for r in shown],
        marker="s",
        linestyle="--",
        color="grey",
        label="mean predicted PD (out-of-fold)",
    )
    ax.errorbar(
        x,
        observed,
        yerr=[low, high],
        marker="o",
        linestyle="none",
        capsize=3,
        label="observed default rate, 95% Jeffreys",
    )
    for xi, r in zip(x, shown, strict=False):
        ax.annotate(
            r["traffic_light"],
            (xi, r["interval_high"]),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=7,
        )
    ax.set_xticks(x, [r["grade"] for r in shown])
    ax.set(xlabel="grade (empty grades omitted)", ylabel="default rate", title="Master-scale back-test")
    ax.set_yscale("symlog", linthresh=0.001)  # log above 0.1%, linear below: an observed rate of 0 stays on the plot
    ax.set_ylim(bottom=0.0)
    ax.legend(loc="upper left", fontsize=7)
    _save(fig, path)


def render_grade_table(rows: list[dict]) -> str:
    """The per-grade back-test as a markdown table (every grade of the scale, empty ones too)."""

    def pct(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}%}"

    lines = [
        "| grade | PD band | count | defaults | mean PD (OOF) | observed rate | 95% Jeffreys interval | p-value | light |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        interval = "–" if r.get("interval_low") is None else f"{pct(r['interval_low'])} – {pct(r['interval_high'])}"
        p_value = "–" if r.get("p_value") is None else f"{r['p_value']:.3f}"
        lines.append(
            f"| {r['grade']} | {pct(r['min_pd'], 3)} – {pct(r['max_pd'], 3)} | {r['count']:,} | {r['defaults']:,} | "
            f"{pct(r.get('mean_pd'))} | {pct(r.get('observed_rate'))} | {interval} | {p_value} | {r['traffic_light']} |"
        )
    return "\n".join(lines)


def _plottable(column: pd.Series) -> pd.Series:
    """Categoricals coloured by their code: shap colours only numbers."""
    if column.dtype == object:
        return pd.Series(pd.Categorical(column).codes, index=column.index).replace(-1, np.nan)
    return column


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def render_candidates(shape: ShapeFacts) -> str:
    """Every candidate, best inner-CV log loss first: loss, explained rows/s, fit seconds, and over budget."""
    return "; ".join(
        f"{name} {loss:.5f} ({shape.candidates_explained_rows_per_s[name]:,.0f} rows/s, "
        f"{shape.candidates_fit_seconds.get(name, 0.0):.0f} s)"
        for name, loss in sorted(shape.candidates_inner_log_loss.items(), key=lambda item: item[1])
    )


def render_model_card(inputs: ReportInputs, top_features: list[str]) -> str:
    """Markdown of at most one page: what the model is, how it was validated, its limits.

    Every figure comes from this run's `ModelFacts`; comparisons with other models name the
    command that measures them (`make benchmark`) instead of quoting a frozen number.
    """
    facts, cv = inputs.facts, inputs.cv
    rows = "\n".join(
        f"| {name} | {cv.summary[name]['mean']:.4f} ± {cv.summary[name]['sd']:.4f} | {getattr(cv.pooled, name):.4f} |"
        for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
    )
    top = ", ".join(f"`{name}`" for name in top_features[:8])
    types = ", ".join(f"{n} {t}" for t, n in facts.feature_types.items())
    monotone = ", ".join(f"`{name}`" for name in facts.monotone_features) or "none"
    shape, data, calibration = facts.shape, facts.data, facts.calibration
    candidates = render_candidates(shape)
    constrained = (
        f"The GLM's coefficients of {', '.join(f'`{n}`' for n in shape.glm_constrained)} had the wrong sign and are "
        "constrained to 0 (the feature acts through the trees only, if at all)."
        if shape.glm_constrained
        else "No GLM coefficient of a monotone feature needed constraining."
        if shape.family != "trees"
        else ""
    )
    return f"""# Model card: probability of default ({facts.model_tag})

**What it is.** A model of the probability that a customer defaults, chosen by the data among a logistic
regression (GLM), LightGBM trees, trees boosted from the GLM's logit and logit-space blends of the GLM with trees.
This one: {shape.description}. {facts.n_features} features from schema `{facts.schema_name}` ({types}); `{facts.id_column}` is never a
feature. The GLM's design: median imputation plus missing indicators, log1p of non-negative amounts and counts,
scaling, one-hot categories (rare levels pooled). Trees use LightGBM's native categorical splits and learned missing
branch. No class weights or resampling; a Platt step (slope {calibration["slope"]:.4f}, intercept
{calibration["intercept"]:.4f}) fitted on out-of-fold log-odds corrects the refit's residual bias.

**Chosen by inner cross-validation within an explanation budget.** Chosen: {shape.name}, because {shape.reason}.
Each outer fold chose by its own inner CV ({", ".join(shape.chosen_per_fold)}). Inner-CV log loss on all labelled rows
({shape.inner_folds} folds), explained rows/s and fit time over the run of each candidate: {candidates}. The budget is
{facts.min_explained_rows_per_s:,.0f} rows/s (model + exact explanation, batch of {facts.explain_timing_rows:,},
{facts.budget_cores} cores; a blend or GLM-offset model costs the sum of its parts); this model explains
{facts.explained_rows_per_s:,.0f} rows/s measured in this run. The choice (the nested CV, its {facts.n_folds + 1} inner CVs side
by side in {facts.cv_processes} processes) cost {shape.selection_seconds:.0f} s of the {facts.training_seconds:.0f} s
run. `make benchmark` compares the model with logistic regression, LightGBM defaults and a tuned LightGBM on the
same folds. Features marked monotone in the schema ({monotone}) keep their direction in every part:
tree constraints, GLM coefficient signs, non-negative blend weights. {constrained}

**Data.** `{data.file_name}` (sha256 `{data.sha256[:16]}…`): {data.n_rows:,} rows, {data.n_labelled:,} labelled
({data.default_rate:.3%} defaults), {data.n_unlabelled:,} unlabelled rows scored into the predictions file.

**Validation.** {facts.n_folds}-fold stratified cross-validation on the labelled rows. Inside each training fold a
{shape.inner_folds}-fold inner CV chooses the candidate and its number of rounds (early stopping on the folds' mean
loss) and its out-of-fold log-odds fit the fold's calibrator, so the validation fold influences nothing that scores
it. Out-of-fold figures (mean ± sd over folds, and pooled):

| metric | per fold | pooled |
|---|---|---|
{rows}

ECE uses {facts.ece_bins} equal-count bins. The final model is chosen by the same inner CV on all labelled rows and
refit on them with {facts.n_trees} trees in all (each tree part's cross-validated count × {facts.final_rounds_multiplier}).
Training took {facts.training_seconds:.0f} s.

![ROC and PR curves](roc_pr.png) ![Reliability](calibration.png)

**What drives the PD.** Largest mean |contribution|: {top}. Every prediction of the service carries its own exact
explanation per feature (log-odds; base value + contributions = the raw score): coefficient × (design value −
training mean) for the GLM part, exact TreeSHAP for the trees, weighted by the blend weights.

![SHAP summary](shap_summary.png)

**Master-scale back-test.** Each answer carries a grade of the master scale stored with the model (fixed policy,
not fitted to this model). Per grade: out-of-fold mean PD against the observed default rate, with the 95% Jeffreys
interval and the one-sided Jeffreys test of ECB/EBA PD back-testing (p-value = BetaCDF(mean PD; d + ½, n − d + ½),
small when the PD is too low; green p ≥ {AMBER_BELOW:.0%}, amber ≥ {RED_BELOW:.0%}, red below).

{render_grade_table(facts.grade_backtest)}

![Master-scale back-test](grades.png)

**Limits.** Figures come from cross-validation on one snapshot; they say nothing about drift after it, so monitor
the PD distribution and realised default rates. With {data.n_positives:,} defaults, rare segments have few events
and wide uncertainty. The model is not a decision rule: cut-offs and fairness review belong to the credit policy
around it.
"""
