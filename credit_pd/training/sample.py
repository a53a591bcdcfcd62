"""The embedded default dataset: realistic Klarna-format rows with a known true PD per row.

The real dataset is not public, so the pipeline ships a generator. Rows are drawn from two
customer latents (engagement: how much the customer buys; risk: how badly they pay) through the
same mechanisms that shape the real export, so features are correlated the way real ones are
and their missing values are informative, nested blocks, not independent holes:

* no account (11.5% of rows): the whole account_* block is NA and account amounts are 0;
* an account without recent status (43%): account days are present, statuses are NA;
* an active account: statuses present, older status windows NA for young accounts;
* no paid invoice in 12 months (23.7%): payment spans, the active/paid ratio and most
  write-off counts are NA, paid sums are 0;
* worst_status_active_inv is NA exactly when num_active_inv is 0.

Marginals (zero shares, quantiles, category frequencies, number formatting) follow the 10,000
real rows in ../shared/data/real_unlabeled_rows.csv; the aggregate facts that cannot be
expressed as a rate live in schemas/klarna_sample_profile.yaml.

Labels are Bernoulli draws from `true_pd`, a documented function of the written features only
(so a model can in principle learn it, and the benchmark can compare with the oracle):
log-odds are an intercept plus non-linear effects (a late-payment threshold near 30 days of
average payment span, an age U-shape, night-time purchases), interactions (unpaid purchase x
unpaid bills, debt collection x recent reminders, young customer x no payment history),
informative missingness (no payment history, no account status) and several features with no
effect at all (time of day outside the night, merchant category within its group, capital paid
12-24 months ago, the largest paid invoice over 24 months, account termination days).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from credit_pd.categories import TRUE_SPELLINGS
from credit_pd.config import SampleConfig
from credit_pd.files import atomic_write
from credit_pd.schema import DatasetSchema, FeatureType, load_schema

PROFILE_PATH = Path(__file__).parents[1] / "schemas" / "klarna_sample_profile.yaml"
TRUE_PD_SUFFIX = "_true_pd"
UUID_NAMESPACE_BYTES = 16


@dataclass(frozen=True)
class SampleShape:
    """Rates read off the real rows; each drives one missing-value block or zero share."""

    no_account_share: float = 0.115
    dormant_account_share: float = 0.429
    no_history_share: float = 0.237
    no_recent_span_share: float = 0.334  # of rows with history: avg_payment_span_0_3m NA
    active_div_present_without_history: float = 0.04
    write_off_na_without_history: float = 0.74
    write_off_na_with_history: float = 0.003
    incoming_debt_na_share: float = 0.114  # of active accounts
    status_window_na: tuple[float, float, float] = (0.07, 0.13, 0.28)  # 3-6m, 6-12m, 12-24m
    has_paid_false_share: float = 0.147
    active_invoice_share: float = 0.302
    paid_without_history: float = 0.11  # sum_paid_inv_0_12m > 0 although no span is recorded
    no_old_invoices_share: float = 0.36  # no archived invoice 12-24 months ago


@dataclass(frozen=True)
class TruthCoefficients:
    """The ground-truth PD function's log-odds terms (see `true_log_odds`)."""

    intercept: float = -6.74  # with `scale`, gives ~1.4% defaults and an oracle ROC AUC ~0.90
    scale: float = 1.34  # multiplies every effect below: sets how well the oracle discriminates
    debt_collection_12m: float = 0.85  # x log1p(num_arch_dc_0_12m)
    debt_collection_24m: float = 0.45  # x log1p(num_arch_dc_12_24m)
    reminders_12m: float = 0.35  # x log1p(num_arch_rem_0_12m)
    collection_after_reminder: float = 0.4  # interaction: dc > 0 and recent reminders > 0
    paid_ok_12m: float = -0.22  # x log1p(num_arch_ok_0_12m)
    unpaid_bills: float = 0.18  # x log1p(num_unpaid_bills)
    unpaid_purchase: float = 0.75  # has_paid is False
    unpaid_purchase_x_bills: float = 0.3  # x log1p(num_unpaid_bills) when has_paid is False
    span_late: float = 1.1  # x logistic((span - 30 days) / 4 days): a threshold, not a trend
    span_late_days: float = 30.0
    span_late_width_days: float = 4.0
    no_payment_history: float = 0.75  # avg_payment_span_0_12m missing
    young_slope: float = 0.55  # per 12 years below 30
    young_thin_file: float = 0.6  # interaction: under 25 and no payment history
    young_thin_file_age: float = 25.0
    old_slope: float = 0.3  # per 15 years above 65
    night_purchase: float = 0.35  # time_hours before 06:00
    recovery_debt: float = 1.0
    incoming_debt_slope: float = 0.35  # x clip(log1p(ratio), 0, 2)
    archived_status_24m: tuple[tuple[int, float], ...] = ((2, 0.3), (3, 0.6))
    account_status_bad: float = 0.55  # account_status == 2
    account_worst_0_3m: tuple[tuple[int, float], ...] = ((2, 0.45), (3, 0.9), (4, 1.2))
    no_account_status: float = 0.15
    merchant_group: tuple[tuple[str, float], ...] = (
        ("Clothing & Shoes", 0.2),
        ("Electronics", 0.3),
        ("Intangible products", 0.6),
        ("Erotic Materials", 0.5),
        ("Children Products", -0.2),
        ("Health & Beauty", -0.1),
        ("Home & Garden", -0.15),
    )
    name_in_email: tuple[tuple[str, float], ...] = (("no_match", 0.3), ("Nick", 0.2), ("F+L", -0.1))


SHAPE = SampleShape()
TRUTH = TruthCoefficients()


@dataclass(frozen=True)
class SampleDataset:
    """A generated dataset in the real file's layout plus the true PD of every row."""

    frame: pd.DataFrame  # typed like `load_dataset`'s result: floats, strings/None, 0/1 target
    true_pd: pd.Series  # indexed by uuid


@lru_cache(maxsize=1)
def load_profile(path: Path = PROFILE_PATH) -> dict:
    """Category sets and empirical distributions taken from the real rows."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def true_pd_path_for(dataset_path: Path | str) -> Path:
    """Where the true PD of a generated dataset is written: `<stem>_true_pd.csv` beside it."""
    path = Path(dataset_path)
    return path.with_name(f"{path.stem}{TRUE_PD_SUFFIX}.csv")


def generate_sample(config: SampleConfig = SampleConfig()) -> SampleDataset:
    """Draw `config.n_rows` rows deterministically from `config.seed`."""
    rng = np.random.default_rng(config.seed)
    n = config.n_rows
    engagement = rng.standard_normal(n)
    risk = rng.standard_normal(n)
    columns: dict[str, np.ndarray] = {}
    columns.update(_purchase_context(rng, n, risk))
    history, reminders_12_24m = _invoice_history(rng, engagement, risk)
    columns.update(history)
    columns.update(_archived_statuses(rng, columns, reminders_12_24m))
    columns.update(_account_block(rng, engagement, risk))
    features = _as_schema_types(pd.DataFrame(columns), load_schema())
    log_odds = true_log_odds(features)
    true_pd = 1.0 / (1.0 + np.exp(-log_odds))
    target = (rng.random(n) < true_pd).astype("float64")
    target[rng.random(n) < config.unlabelled_share] = np.nan
    uuids = _uuids(rng, n)
    schema = load_schema()
    frame = pd.concat(
        [pd.DataFrame({schema.id_column: uuids, schema.target_column: target}), features[schema.feature_names]],
        axis=1,
    )
    return SampleDataset(frame=frame, true_pd=pd.Series(true_pd, index=pd.Index(uuids, name="uuid"), name="true_pd"))


def write_sample(dataset_path: Path | str, config: SampleConfig = SampleConfig()) -> Path:
    """Write the dataset in the real export's format and its true PDs beside it; both atomically."""
    dataset_path = Path(dataset_path)
    sample = generate_sample(config)
    schema = load_schema()
    truth_path = true_pd_path_for(dataset_path)
    atomic_write(
        truth_path, lambda handle: sample.true_pd.reset_index().to_csv(handle, index=False, float_format="%.12g")
    )
    text = to_export_format(sample.frame, schema)
    atomic_write(dataset_path, lambda handle: text.to_csv(handle, sep=schema.separator, index=False))
    return truth_path


def to_export_format(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Render values as the real export writes them ("0.0" vs "0", True/False, NA)."""
    out = pd.DataFrame(index=frame.index)
    out[schema.id_column] = frame[schema.id_column]
    target = frame[schema.target_column]
    out[schema.target_column] = np.where(target.isna(), schema.missing_marker, target.fillna(0).astype(int).astype(str))
    for name in schema.feature_names:
        out[name] = _render_column(frame[name], name, schema.missing_marker)
    return out


def true_log_odds(features: pd.DataFrame, truth: TruthCoefficients = TRUTH) -> np.ndarray:
    """The ground truth in log-odds, from written features only (as `load_dataset` types them)."""
    num = {name: pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float) for name in _NUMERIC_TRUTH_INPUTS}
    dc12 = np.log1p(num["num_arch_dc_0_12m"])
    rem12 = np.log1p(num["num_arch_rem_0_12m"])
    unpaid = np.log1p(num["num_unpaid_bills"])
    has_paid = _as_bool(features["has_paid"])
    span = num["avg_payment_span_0_12m"]
    late = 1.0 / (1.0 + np.exp(-(np.nan_to_num(span, nan=0.0) - truth.span_late_days) / truth.span_late_width_days))
    span_term = np.where(np.isnan(span), truth.no_payment_history, truth.span_late * late)
    age = num["age"]
    ratio = np.nan_to_num(num["account_incoming_debt_vs_paid_0_24m"], nan=0.0)
    account_status = num["account_status"]
    effects = (
        truth.debt_collection_12m * dc12
        + truth.debt_collection_24m * np.log1p(num["num_arch_dc_12_24m"])
        + truth.reminders_12m * rem12
        + truth.collection_after_reminder * ((dc12 > 0) & (rem12 > 0))
        + truth.paid_ok_12m * np.log1p(num["num_arch_ok_0_12m"])
        + truth.unpaid_bills * unpaid
        + (~has_paid) * (truth.unpaid_purchase + truth.unpaid_purchase_x_bills * unpaid)
        + span_term
        + truth.young_slope * np.maximum(0.0, (30.0 - age) / 12.0)
        + truth.old_slope * np.maximum(0.0, (age - 65.0) / 15.0)
        + truth.young_thin_file * (np.isnan(span) & (age < truth.young_thin_file_age))
        + truth.night_purchase * (num["time_hours"] < 6.0)
        + truth.recovery_debt * (num["recovery_debt"] > 0)
        + truth.incoming_debt_slope * np.clip(np.log1p(ratio), 0.0, 2.0)
        + _lookup(num["status_max_archived_0_24_months"], truth.archived_status_24m)
        + truth.account_status_bad * (account_status == 2)
        + truth.no_account_status * np.isnan(account_status)
        + _lookup(num["account_worst_status_0_3m"], truth.account_worst_0_3m)
        + _lookup(features["merchant_group"].to_numpy(dtype=object), truth.merchant_group)
        + _lookup(features["name_in_email"].to_numpy(dtype=object), truth.name_in_email)
    )
    return truth.intercept + truth.scale * np.asarray(effects, dtype=float)


def true_pd(features: pd.DataFrame, truth: TruthCoefficients = TRUTH) -> np.ndarray:
    """The ground-truth probability of default of each row."""
    return 1.0 / (1.0 + np.exp(-true_log_odds(features, truth)))


_NUMERIC_TRUTH_INPUTS = (
    "num_arch_dc_0_12m", "num_arch_dc_12_24m", "num_arch_rem_0_12m", "num_arch_ok_0_12m", "num_unpaid_bills",
    "avg_payment_span_0_12m", "age", "time_hours", "recovery_debt", "account_incoming_debt_vs_paid_0_24m",
    "status_max_archived_0_24_months", "account_status", "account_worst_status_0_3m",
)  # fmt: skip


def _lookup(values: np.ndarray, table: tuple[tuple, ...]) -> np.ndarray:
    out = np.zeros(len(values))
    for key, effect in table:
        out[values == key] = effect
    return out


def _as_bool(column: pd.Series) -> np.ndarray:
    if column.dtype == object:
        return column.astype(str).isin(TRUE_SPELLINGS).to_numpy()
    return column.to_numpy(dtype=float) == 1.0


# --- drawing the features ------------------------------------------------------------------


def _purchase_context(rng: np.random.Generator, n: int, risk: np.ndarray) -> dict[str, np.ndarray]:
    """Who buys what, when: age, merchant, email match, hour, whether this purchase is paid."""
    profile = load_profile()
    levels = np.asarray(profile["age_quantiles"]["levels"], dtype=float) / 100.0
    quantiles = np.asarray(profile["age_quantiles"]["values"], dtype=float)
    # Younger customers are riskier in the real book: tie age rank loosely to the risk latent.
    age_rank = _ranks(-0.35 * risk + rng.standard_normal(n))
    quantiles[-1] += 0.999  # so that flooring can reach the oldest age seen
    age = np.floor(np.interp(age_rank, levels, quantiles))
    merchants = profile["merchants"]
    names = np.array(list(merchants))
    weights = np.array([count for _, count in merchants.values()], dtype=float)
    category = rng.choice(names, size=n, p=weights / weights.sum())
    group_of = {name: group for name, (group, _) in merchants.items()}
    emails = profile["name_in_email"]
    email_weights = np.array(list(emails.values()), dtype=float)
    hours = np.asarray(profile["purchases_per_hour"], dtype=float)
    hour = rng.choice(len(hours), size=n, p=hours / hours.sum())
    seconds = np.minimum(hour * 3600 + rng.integers(1, 3601, size=n), 24 * 3600)
    unpaid_score = 0.6 * risk + rng.standard_normal(n)
    return {
        "age": age,
        "merchant_category": category.astype(object),
        "merchant_group": np.array([group_of[c] for c in category], dtype=object),
        "name_in_email": rng.choice(
            np.array(list(emails), dtype=object), size=n, p=email_weights / email_weights.sum()
        ),
        "time_hours": seconds / 3600.0,
        "has_paid": (unpaid_score < np.quantile(unpaid_score, 1 - SHAPE.has_paid_false_share)).astype(float),
    }


def _invoice_history(
    rng: np.random.Generator, engagement: np.ndarray, risk: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Invoice counts, paid sums and payment spans; no history in 12 months leaves NA blocks.

    Also returns the reminders of 12-24 months ago: the export has no column for them, but the
    archived-status columns must be consistent with them."""
    n = len(engagement)
    history_score = engagement + 0.5 * rng.standard_normal(n)
    no_history = history_score < np.quantile(history_score, SHAPE.no_history_share)
    volume = np.exp(np.log(4.5) + 1.25 * (0.8 * engagement + 0.6 * rng.standard_normal(n)))
    bad_share = 1.0 / (1.0 + np.exp(-(-2.4 + 0.9 * risk)))
    ok_12m = np.where(no_history, rng.poisson(0.05, n), rng.poisson(volume * (1 - 0.5 * bad_share)))
    rem_12m = np.where(no_history, 0, rng.poisson(volume * bad_share * 0.45))
    dc_rate = 0.02 * np.exp(1.3 * risk)
    dc_12m = rng.poisson(dc_rate * (1 + 0.5 * rem_12m))
    old_score = engagement + rng.standard_normal(n)
    had_old = old_score > np.quantile(old_score, SHAPE.no_old_invoices_share)
    ok_24m = np.where(had_old, rng.poisson(volume * np.exp(0.4 * rng.standard_normal(n))), 0)
    dc_24m = np.where(had_old, rng.poisson(dc_rate * 0.9), 0)
    invoice_size = np.exp(np.log(3500) + 0.7 * rng.standard_normal(n))
    paid_count = ok_12m + rem_12m
    paid_anything = ~no_history | (rng.random(n) < SHAPE.paid_without_history)
    sum_paid = np.where(
        paid_anything, np.round(np.maximum(paid_count, 1) * invoice_size * np.exp(0.3 * rng.standard_normal(n))), 0.0
    )
    max_12m = np.where(
        sum_paid > 0, np.minimum(np.round(invoice_size * np.exp(0.6 + 0.4 * rng.standard_normal(n))), sum_paid), 0.0
    )
    old_max = np.where(ok_24m > 0, np.round(invoice_size * np.exp(0.5 + 0.5 * rng.standard_normal(n))), 0.0)
    span = np.exp(np.log(14.0) + 0.35 * risk + 0.35 * rng.standard_normal(n))
    invoices_averaged = np.clip(paid_count, 1, 8)
    span_12m = np.where(no_history, np.nan, np.round(span * invoices_averaged) / invoices_averaged)
    no_recent = no_history | (rng.random(n) < SHAPE.no_recent_span_share)
    span_3m = np.where(no_recent, np.nan, np.round(span * np.exp(0.3 * rng.standard_normal(n)) * 4) / 4)
    active_score = 0.7 * engagement + 0.3 * risk + rng.standard_normal(n)
    has_active = active_score > np.quantile(active_score, 1 - SHAPE.active_invoice_share)
    active = np.where(has_active, 1 + rng.poisson(np.exp(0.2 + 0.5 * engagement).clip(0, 20)), 0)
    div_present = ~no_history | (rng.random(n) < SHAPE.active_div_present_without_history)
    active_div = np.where(div_present, np.round(active / np.maximum(paid_count, 1), 6), np.nan)
    unpaid = np.where(
        rng.random(n) < 0.5 + 0.2 * (risk > 1),
        rng.poisson(np.exp(0.9 + 0.9 * rng.standard_normal(n) + 0.3 * risk).clip(0, 200)),
        0,
    )
    write_off_na = np.where(
        no_history, rng.random(n) < SHAPE.write_off_na_without_history, rng.random(n) < SHAPE.write_off_na_with_history
    )
    written_off_12m = np.where(write_off_na, np.nan, (rng.random(n) < 0.0003 * (1 + dc_12m)).astype(float))
    written_off_24m = np.where(write_off_na, np.nan, (rng.random(n) < 0.0003 * (1 + dc_24m)).astype(float))
    recovery = np.where(
        rng.random(n) < 0.0015 * (1 + 3 * (dc_12m + dc_24m)),
        np.round(np.exp(np.log(1500) + 0.8 * rng.standard_normal(n))),
        0.0,
    )
    worst_active = np.where(
        active > 0,
        1.0 + (rng.random(n) < 0.1 * np.exp(0.5 * risk).clip(0, 5)) + (rng.random(n) < 0.004 * np.exp(risk)),
        np.nan,
    )
    reminders_12_24m = np.where(had_old, rng.poisson(volume * bad_share * 0.3), 0).astype(float)
    return {
        "num_arch_ok_0_12m": ok_12m.astype(float),
        "num_arch_ok_12_24m": ok_24m.astype(float),
        "num_arch_rem_0_12m": rem_12m.astype(float),
        "num_arch_dc_0_12m": dc_12m.astype(float),
        "num_arch_dc_12_24m": dc_24m.astype(float),
        "num_arch_written_off_0_12m": written_off_12m,
        "num_arch_written_off_12_24m": written_off_24m,
        "num_active_inv": active.astype(float),
        "num_active_div_by_paid_inv_0_12m": active_div,
        "num_unpaid_bills": unpaid.astype(float),
        "sum_paid_inv_0_12m": sum_paid,
        "max_paid_inv_0_12m": max_12m,
        "max_paid_inv_0_24m": np.maximum(max_12m, old_max),
        "avg_payment_span_0_12m": span_12m,
        "avg_payment_span_0_3m": span_3m,
        "recovery_debt": recovery,
        "worst_status_active_inv": worst_active,
    }, reminders_12_24m


def _archived_statuses(
    rng: np.random.Generator, columns: dict[str, np.ndarray], reminders_12_24m: np.ndarray
) -> dict[str, np.ndarray]:
    """Statuses of archived invoices: 0 none, 1 paid, 2 reminder, 3 debt collection, 5 written off.

    The last three statuses are draws from the customer's own invoice mix; the window maxima are
    consistent with the counts (max over 24 months >= over 12 >= over 6)."""
    ok12, rem12, dc12 = columns["num_arch_ok_0_12m"], columns["num_arch_rem_0_12m"], columns["num_arch_dc_0_12m"]
    ok24, dc24, rem24 = columns["num_arch_ok_12_24m"], columns["num_arch_dc_12_24m"], reminders_12_24m
    written_off = np.nan_to_num(columns["num_arch_written_off_0_12m"]) + np.nan_to_num(
        columns["num_arch_written_off_12_24m"]
    )
    counts = np.stack([ok12 + ok24, rem12 + rem24, dc12 + dc24], axis=1)
    total = counts.sum(axis=1)
    shares = counts / np.maximum(total, 1)[:, None]
    statuses = {}
    for rank, name in enumerate(
        ("status_last_archived_0_24m", "status_2nd_last_archived_0_24m", "status_3rd_last_archived_0_24m")
    ):
        drawn = 1 + (rng.random(len(total))[:, None] > np.cumsum(shares, axis=1)).sum(axis=1)
        statuses[name] = np.where(total > rank, np.minimum(drawn, 3), 0)

    def half(counts: np.ndarray) -> np.ndarray:
        """Of a 12-month count, those in the last 6 months."""
        return rng.binomial(counts.astype(int), 0.5)

    statuses["status_max_archived_0_6_months"] = _window_max(half(ok12), half(rem12), half(dc12), 0)
    statuses["status_max_archived_0_12_months"] = _window_max(ok12, rem12, dc12, 0)
    statuses["status_max_archived_0_24_months"] = np.maximum(
        _window_max(counts[:, 0], counts[:, 1], counts[:, 2], written_off), statuses["status_last_archived_0_24m"]
    )
    statuses["status_max_archived_0_12_months"] = np.maximum(
        statuses["status_max_archived_0_12_months"], statuses["status_max_archived_0_6_months"]
    )
    return {name: values.astype(int).astype(str).astype(object) for name, values in statuses.items()}


def _window_max(ok: np.ndarray, rem: np.ndarray, dc: np.ndarray, written_off: np.ndarray | int) -> np.ndarray:
    return np.select([np.asarray(written_off) > 0, dc > 0, rem > 0, ok > 0], [5, 3, 2, 1], 0)


def _account_block(rng: np.random.Generator, engagement: np.ndarray, risk: np.ndarray) -> dict[str, np.ndarray]:
    """The account product's columns: absent, dormant or active, with nested NA windows."""
    n = len(engagement)
    tier_score = 0.8 * engagement + rng.standard_normal(n)
    cut_none, cut_dormant = np.quantile(
        tier_score, [SHAPE.no_account_share, SHAPE.no_account_share + SHAPE.dormant_account_share]
    )
    no_account = tier_score < cut_none
    active = tier_score >= cut_dormant
    has_days = ~no_account
    added = np.where(
        has_days & (rng.random(n) < np.where(active, 0.5, 0.12)),
        np.round(np.exp(np.log(20000) + 1.1 * rng.standard_normal(n))),
        0.0,
    )
    rem_days = np.where(
        rng.random(n) < 0.1 * np.exp(0.6 * risk).clip(0, 6), np.round(rng.gamma(1.5, 25, n)).clip(1, 365), 0.0
    )
    dc_days = np.where(rng.random(n) < 0.003 * np.exp(risk), np.round(rng.uniform(1, 365, n)), 0.0)
    term_days = np.where(rng.random(n) < 0.013, np.round(rng.uniform(1, 61, n)), 0.0)
    status_na = ~active
    account_age = rng.random(n)
    worst = {}
    for name, na_share, spread in zip(
        ("account_worst_status_3_6m", "account_worst_status_6_12m", "account_worst_status_12_24m"),
        SHAPE.status_window_na,
        (0.15, 0.2, 0.25),
        strict=False,
    ):
        worst[name] = np.where(status_na | (account_age < na_share), np.nan, _account_status_level(rng, risk, spread))
    recent = _account_status_level(rng, risk, 0.15)
    incoming_na = status_na | (rng.random(n) < SHAPE.incoming_debt_na_share)
    ratio = np.where(rng.random(n) < 0.33, 0.0, np.exp(np.log(0.35) + 1.4 * rng.standard_normal(n) + 0.3 * risk))
    return {
        "account_amount_added_12_24m": added,
        "account_days_in_dc_12_24m": np.where(has_days, dc_days, np.nan),
        "account_days_in_rem_12_24m": np.where(has_days, rem_days, np.nan),
        "account_days_in_term_12_24m": np.where(has_days, term_days, np.nan),
        "account_incoming_debt_vs_paid_0_24m": np.where(incoming_na, np.nan, ratio),
        "account_status": np.where(status_na, np.nan, 1.0 + (rng.random(n) < 0.04 * np.exp(0.5 * risk).clip(0, 8))),
        "account_worst_status_0_3m": np.where(status_na, np.nan, recent),
        **worst,
        "sum_capital_paid_account_0_12m": np.where(
            active & (rng.random(n) < 0.74), np.round(np.exp(np.log(15000) + 1.0 * rng.standard_normal(n))), 0.0
        ),
        "sum_capital_paid_account_12_24m": np.where(
            has_days & (rng.random(n) < 0.28), np.round(np.exp(np.log(15000) + 1.0 * rng.standard_normal(n))), 0.0
        ),
    }


def _account_status_level(rng: np.random.Generator, risk: np.ndarray, spread: float) -> np.ndarray:
    """Worst account status in a window: 1 fine ... 4 worst, more often bad for risky customers."""
    score = risk + rng.standard_normal(len(risk))
    level = 1.0 + (score > np.quantile(score, 1 - spread))
    level += score > np.quantile(score, 0.988)
    level += score > np.quantile(score, 0.997)
    return level


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled into (0, 1): maps any latent onto an empirical quantile function."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (order + 0.5) / len(values)


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random-looking but seeded version-4 UUIDs, like the real export's ids."""
    raw = rng.integers(0, 256, size=(n, UUID_NAMESPACE_BYTES), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = [row.tobytes().hex() for row in raw]
    return np.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes], dtype=object)


# --- writing in the export's format ---------------------------------------------------------

# How the real export prints each column: integers ("0"), floats with a trailing ".0" ("0.0"),
# or full-precision floats ("0.0091346153846153").
_INTEGER_STYLE = frozenset({
    "account_amount_added_12_24m", "age", "num_active_inv", "num_arch_dc_0_12m", "num_arch_dc_12_24m",
    "num_arch_ok_0_12m", "num_arch_ok_12_24m", "num_arch_rem_0_12m", "num_unpaid_bills", "recovery_debt",
    "sum_capital_paid_account_0_12m", "sum_capital_paid_account_12_24m", "sum_paid_inv_0_12m",
})  # fmt: skip


def _as_schema_types(features: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Categorical codes drawn as numbers become the strings the export writes ("1.0", "3")."""
    typed = features.copy()
    for spec in schema.features:
        if spec.type is FeatureType.CATEGORICAL and pd.api.types.is_numeric_dtype(features[spec.name]):
            text = _render_column(features[spec.name], spec.name, schema.missing_marker)
            typed[spec.name] = text.astype(object).where(features[spec.name].notna(), None)
        elif spec.type is FeatureType.CATEGORICAL:
            typed[spec.name] = features[spec.name].astype(object)
    return typed


def _render_column(column: pd.Series, name: str, missing: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(column):
        return column.astype(object).where(column.notna(), missing)
    values = column.to_numpy(dtype=float)
    if name == "has_paid":
        rendered = np.where(values == 1.0, "True", "False")
    elif name in _INTEGER_STYLE:
        rendered = np.array([str(int(v)) if v == v else missing for v in values], dtype=object)
    else:
        rendered = np.array([_float_text(v) if v == v else missing for v in values], dtype=object)
    return pd.Series(np.where(np.isnan(values), missing, rendered), index=column.index)


def _float_text(value: float) -> str:
    """Python's shortest round-trip repr, capped at the export's 15 significant digits."""
    text = repr(float(value))
    return text if len(text) <= 17 else f"{value:.15g}"
