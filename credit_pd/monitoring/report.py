"""Offline drift report: PSI of a new dataset against the stored model's training reference.

    python -m credit_pd.monitoring.report --data NEW.csv [--model-tag TAG] [--html drift.html]

What a risk analyst runs before a model review: NEW.csv (in the training file's format; the
target column may be all `NA`) is read with the schema stored in the model (strict loader:
errors name the column and line), encoded by the model's own encoder, scored, and binned with
the same bins the live metrics use. It prints PSI per feature (highest first) and for the PD,
the unseen-category and out-of-range shares, and the mean PD against training; `--html` adds
a page with one chart per feature (training vs new shares per bin) as embedded PNGs.

PSI needs rows: with no drift at all its expected value is about (bins - 1) / rows (it is a
chi-square statistic divided by the row count), so below `MIN_ROWS_PER_BIN` rows per bin noise
alone reaches the 0.1 "moving" line. The report says so and marks those verdicts; `--strict`
makes it exit with status 3 (`EXIT_SMALL_SAMPLE`), for pipelines that must not act on noise.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from credit_pd.config import DEFAULT_MODEL_TAG
from credit_pd.errors import CreditPDError
from credit_pd.features import FeatureEncoder
from credit_pd.files import atomic_write
from credit_pd.model_store import get_stored_model, load_from_store
from credit_pd.monitoring.reference import BinnedFeature, DriftReference, psi, reference_from_store
from credit_pd.scoring_model import ScoringModel

# The industry's reading of PSI, also the chart's default alert thresholds.
PSI_MOVING = 0.1
PSI_SHIFTED = 0.25
# Fewest new rows per (non-empty training) bin for a PSI to mean anything; see the module docstring.
MIN_ROWS_PER_BIN = 10
# Exit status of `--strict` when the sample is too small for some variable (2 = the input is refused).
EXIT_SMALL_SAMPLE = 3


@dataclass(frozen=True)
class VariableDrift:
    """One feature's (or the PD's) bins with training and new shares, and its PSI."""

    name: str
    kind: str
    bins: tuple[str, ...]
    reference_shares: tuple[float, ...]
    new_shares: tuple[float, ...]
    psi: float
    unseen_share: float = 0.0
    out_of_range_share: float = 0.0
    # New rows this variable needs for a meaningful PSI (MIN_ROWS_PER_BIN per non-empty training bin).
    rows_needed: int = 0

    @property
    def verdict(self) -> str:
        if self.psi > PSI_SHIFTED:
            return "shifted"
        return "moving" if self.psi > PSI_MOVING else "stable"


@dataclass(frozen=True)
class DriftReport:
    features: list[VariableDrift]  # highest PSI first
    pd: VariableDrift
    n_rows: int
    pd_mean_new: float
    pd_mean_reference: float
    model_tag: str

    @property
    def too_small_for(self) -> list[VariableDrift]:
        """Variables (the PD included) whose PSI this many rows cannot support."""
        return [d for d in [self.pd, *self.features] if self.n_rows < d.rows_needed]

    def sample_warning(self) -> str | None:
        """One line when the sample is too small for some variable; None when it is large enough."""
        small = self.too_small_for
        if not small:
            return None
        needed = max(d.rows_needed for d in small)
        return (
            f"warning: {self.n_rows:,} row(s) are too few for a reliable PSI of {len(small)} of {len(self.features) + 1} "
            f"variables (fewer than {MIN_ROWS_PER_BIN} rows per bin; their verdicts are marked *): "
            f"at least {needed:,} rows are needed"
        )


def _variable(
    binned: BinnedFeature, counts: np.ndarray, unseen: float = 0.0, out_of_range: float = 0.0
) -> VariableDrift:
    total = counts.sum()
    shares = tuple(float(c) / total if total else 0.0 for c in counts)
    needed = MIN_ROWS_PER_BIN * sum(1 for share in binned.shares if share > 0)
    return VariableDrift(
        binned.name,
        binned.kind,
        binned.bins,
        binned.shares,
        shares,
        psi(binned.shares, counts),
        unseen,
        out_of_range,
        rows_needed=needed,
    )


def feature_drift(
    reference: DriftReference, encoder: FeatureEncoder, frame: pd.DataFrame, matrix: np.ndarray
) -> list[VariableDrift]:
    """PSI and unseen / out-of-range shares per feature, highest PSI first.

    `frame` holds the loaded (canonical) values, `matrix` their encoding: a categorical value that
    is present in the frame but NaN in the matrix is a category the model never saw.
    """
    drifts = []
    n_rows = max(len(frame), 1)
    for col, name in enumerate(encoder.feature_names):
        binned = reference.features.get(name)
        if binned is None:
            continue
        column = matrix[:, col]
        if name in encoder.categorical:
            unseen = frame[name].notna().to_numpy() & np.isnan(column)
            counts = binned.counts(column, binned.code_to_bin(encoder.categorical[name]), unseen)
            drifts.append(_variable(binned, counts, unseen=unseen.sum() / n_rows))
        else:
            low, high = encoder.numeric_ranges.get(name, (-np.inf, np.inf))
            with np.errstate(invalid="ignore"):
                outside = ((column < low) | (column > high)).sum()
            drifts.append(_variable(binned, binned.counts(column), out_of_range=outside / n_rows))
    return sorted(drifts, key=lambda d: (-np.nan_to_num(d.psi, nan=-1.0), d.name))


def drift_report(model: ScoringModel, reference: DriftReference, frame: pd.DataFrame, model_tag: str) -> DriftReport:
    matrix = model.encoder.encode_frame(frame)
    pds = model.predict_pd(matrix)
    pd_counts = np.bincount(reference.pd_bin_indices(pds), minlength=len(reference.pd.bins))
    return DriftReport(
        features=feature_drift(reference, model.encoder, frame, matrix),
        pd=_variable(reference.pd, pd_counts),
        n_rows=len(frame),
        pd_mean_new=float(pds.mean()) if len(pds) else float("nan"),
        pd_mean_reference=reference.pd_mean,
        model_tag=model_tag,
    )


def format_table(report: DriftReport) -> str:
    """The printed report: one line per feature, highest PSI first, then the PD."""
    small = {d.name for d in report.too_small_for}
    warning = report.sample_warning()

    def verdict(d: VariableDrift) -> str:
        return d.verdict + ("*" if d.name in small else "")

    lines = [
        f"Drift of {report.n_rows:,} rows against the training reference of {report.model_tag}",
        f"PSI: < {PSI_MOVING} stable, {PSI_MOVING}-{PSI_SHIFTED} moving, > {PSI_SHIFTED} shifted",
        *([warning] if warning else []),
        "",
        f"{'feature':<40} {'kind':<12} {'PSI':>8}  {'verdict':<8} {'unseen':>7} {'out of range':>12}",
    ]
    for d in report.features:
        lines.append(
            f"{d.name:<40} {d.kind:<12} {d.psi:>8.4f}  {verdict(d):<8} {d.unseen_share:>7.2%} {d.out_of_range_share:>12.2%}"
        )
    lines += [
        "",
        f"{'PD (log-odds bins)':<40} {'prediction':<12} {report.pd.psi:>8.4f}  {verdict(report.pd):<8}",
        f"mean PD: new {report.pd_mean_new:.4%}, training {report.pd_mean_reference:.4%} "
        f"({(report.pd_mean_new - report.pd_mean_reference) * 100:+.2f} percentage points)",
    ]
    return "\n".join(lines)


def _chart_png(drift: VariableDrift) -> str:
    """Training vs new shares per bin as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    x = np.arange(len(drift.bins))
    ax.bar(x - 0.2, drift.reference_shares, width=0.4, label="training", color="#7f8c8d")
    ax.bar(
        x + 0.2, drift.new_shares, width=0.4, label="new", color="#c0392b" if drift.verdict == "shifted" else "#2980b9"
    )
    ax.set_xticks(x, drift.bins, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("share")
    ax.set_title(f"{drift.name}: PSI {drift.psi:.3f} ({drift.verdict})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(report: DriftReport, data_path: Path) -> str:
    rows = "".join(
        f"<tr class='{d.verdict}'><td>{html.escape(d.name)}</td><td>{d.kind}</td><td>{d.psi:.4f}</td><td>{d.verdict}</td>"
        f"<td>{d.unseen_share:.2%}</td><td>{d.out_of_range_share:.2%}</td></tr>"
        for d in report.features
    )
    charts = "".join(
        f"<img alt='{html.escape(d.name)}' src='data:image/png;base64,{_chart_png(d)}'>"
        for d in [report.pd, *report.features]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift report: {html.escape(str(data_path))}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}
tr.shifted{{background:#f5b7b1}} tr.moving{{background:#fdebd0}} img{{margin:4px}}</style></head><body>
<h1>Drift report</h1>
<p>{report.n_rows:,} rows of <code>{html.escape(str(data_path))}</code> against the training reference of
<code>{html.escape(report.model_tag)}</code>.
PSI below {PSI_MOVING}: stable; {PSI_MOVING} to {PSI_SHIFTED}: moving; above {PSI_SHIFTED}: shifted.</p>
{f"<p class='shifted'>{html.escape(report.sample_warning() or '')}</p>" if report.too_small_for else ""}
<p><b>PD</b>: PSI {report.pd.psi:.4f} ({report.pd.verdict});
mean PD new {report.pd_mean_new:.4%}, training {report.pd_mean_reference:.4%}.</p>
<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>verdict</th><th>unseen</th><th>out of range</th></tr>{rows}</table>
<h2>Training vs new shares per bin</h2>{charts}
</body></html>
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m credit_pd.monitoring.report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="new dataset, in the training file's format (target may be NA)"
    )
    parser.add_argument(
        "--model-tag", default=DEFAULT_MODEL_TAG, help="stored model to compare with (default: %(default)s)"
    )
    parser.add_argument("--html", type=Path, help="also write an HTML page with one chart per feature")
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with status {EXIT_SMALL_SAMPLE} when the data has too few rows for a reliable PSI "
        f"(fewer than {MIN_ROWS_PER_BIN} per bin of some variable); the report is printed either way",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from credit_pd.dataset import load_dataset  # the strict loader; this tool is offline

    args = parse_args(argv)
    try:
        stored = get_stored_model(args.model_tag)
        reference = reference_from_store(stored)
        if reference is None:
            raise CreditPDError(
                f"model {stored.tag} carries no drift reference (trained before monitoring existed); retrain it"
            )
        model = load_from_store(stored)
        frame = load_dataset(args.data, model.schema)
    except CreditPDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = drift_report(model, reference, frame, str(stored.tag))
    print(format_table(report))
    if args.html is not None:
        page = render_html(report, args.data)
        atomic_write(args.html, lambda out: out.write(page))
        print(f"\nwrote {args.html}")
    warning = report.sample_warning()
    if warning:
        print(warning, file=sys.stderr)
        if args.strict:
            return EXIT_SMALL_SAMPLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
