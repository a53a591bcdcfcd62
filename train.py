"""Train the probability-of-default model: `python train.py --help`.

Reads a dataset (default: data/dataset.csv; the embedded sample is generated there when it is
absent), validates it against a schema, chooses the model by nested cross-validation (an inner
k-fold CV inside each outer fold compares the GLM, GLM-offset boosting, tree shapes and blends
within an explanation budget), refits the chosen one on every labelled row, verifies its table
TreeSHAP against LightGBM's, saves it to the BentoML model store, and writes `uuid,pd` for every
unlabelled row and a one-page model card.

Outputs are published all or nothing: the predictions file, the report folder and the model
store entry are staged first and moved into place together, the store's `latest` last; a run
that fails or is killed leaves the previous outputs as they were (the next run completes or
removes whatever an interrupted run left). A dataset with no unlabelled rows still replaces the
predictions file, with its header only (the run says so), so that the file always belongs to
the published model. Data errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from credit_pd.config import DEFAULT_DATASET_PATH, DEFAULT_PREDICTIONS_PATH, DEFAULT_REPORT_DIR, TrainingConfig
from credit_pd.errors import CreditPDError
from credit_pd.schema import DEFAULT_SCHEMA_PATH


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATASET_PATH,
        help="semicolon-separated dataset (default: %(default)s; generated when absent)",
    )
    parser.add_argument(
        "--schema",
        type=Path,
        default=DEFAULT_SCHEMA_PATH,
        help="YAML column schema of the dataset (default: the Klarna schema)",
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        default=DEFAULT_PREDICTIONS_PATH,
        help="where to write uuid,pd for the unlabelled rows (default: %(default)s)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help="folder for model_card.md and its plots (default: %(default)s)",
    )
    parser.add_argument(
        "--folds", type=int, default=TrainingConfig.n_folds, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=TrainingConfig.num_threads, help="LightGBM threads (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=TrainingConfig.seed,
        help="seed of the folds, the inner splits and LightGBM (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a rough, fast run for smoke tests: 2 outer and 2 inner folds, few rounds, the GLM and two tree shapes",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--master-scale",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML rating scale `grades: [{name, max_pd}, ...]` overriding the schema's "
        "(default: the schema's master_scale, else the geometric default of credit_pd/master_scale.py)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # LightGBM's OpenMP threads sleep instead of spinning while they wait (read when LightGBM
    # loads): on a shared machine spinning threads starve each other (a 2-thread fit ran ~15x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from credit_pd.training.run import run_training  # heavy imports only after --help

    config = TrainingConfig(n_folds=args.folds, num_threads=args.threads, seed=args.seed)
    if args.quick:
        config = config.quick()
    try:
        scale = None
        if args.master_scale is not None:
            from credit_pd.master_scale import load_master_scale

            scale = load_master_scale(args.master_scale)
        run = run_training(
            args.data,
            args.schema,
            args.predictions,
            args.report_dir,
            config,
            progress=not args.quiet,
            master_scale=scale,
        )
    except CreditPDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pooled = run.cv.pooled
    print(f"out-of-fold ROC AUC {pooled.roc_auc:.4f}, log loss {pooled.log_loss:.5f}, ECE {pooled.ece:.5f}")
    print(f"model saved to the BentoML store as {run.model_tag}")
    print(f"{run.n_scored:,} predictions written to {run.predictions_path}")
    print(f"model report written to {run.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
