"""Decision records: their canonical input, and a replay that proves every recorded decision again.

A decision record (written by the service, `credit_pd.serving.records`) says which model scored
which input to which PD, grade and reasons. Months later a complaint, an audit or a regulator's
question is answered by re-scoring the record's input with the model its tag names, taken from the
model store, and showing the answer is the same:

    python -m credit_pd.replay RECORDS.jsonl

prints how many records are identical, differ (the first few, field by field), name a model that
is not in the store, are tampered (the input no longer matches its `input_sha256`), carry no input
(written with `decision_records_include_input` false: they can be matched against the lender's own
copy of the application by hash, not replayed) or are not readable; it exits 0 only when every
record replayed identically.

The canonical input, defined here once so that the service and replay compute the same hash: the
model's features only (never the options or the caller's uuid), in schema order, numbers as
floats, booleans as booleans, categories as the canonical label the request model produced, null
for missing; serialised as compact UTF-8 JSON by orjson (shortest round-trip floats). `pd` is
compared exactly: the service, the batch job and replay share `ScoringModel.decide`, and a row's
result does not depend on the batch it was scored in.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from credit_pd.schema import DatasetSchema, FeatureType

# The fields of one record, in the order they are written.
RECORD_FIELDS = (
    "time",
    "request_id",
    "uuid",
    "model_tag",
    "input_sha256",
    "input",
    "pd",
    "grade",
    "reasons",
    "max_reasons",
)
# Records re-scored per model call: large enough to amortise LightGBM's call, small enough for memory.
REPLAY_CHUNK_ROWS = 2_000
# Differences printed in full; the rest are counted.
SHOWN_DIFFERENCES = 5


class InputCanonicaliser:
    """`canonical_input` for one schema, with the per-feature conversions worked out once.

    The service builds one per model and calls it for every scored application, so the schema
    is walked once, not per record (it was most of a record's cost).
    """

    def __init__(self, schema: DatasetSchema) -> None:
        kinds = {FeatureType.NUMERIC: float, FeatureType.BOOLEAN: bool}
        self.plan = [(spec.name, kinds.get(spec.type, str)) for spec in schema.features]

    def __call__(self, application: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: None if (value := application.get(name)) is None else convert(value) for name, convert in self.plan
        }


def canonical_input(application: Mapping[str, Any], schema: DatasetSchema) -> dict[str, Any]:
    """The features of one validated application, as the record stores and hashes them."""
    return InputCanonicaliser(schema)(application)


def input_sha256(canonical: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical input's compact JSON bytes."""
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()


@dataclass
class ReplaySummary:
    """Counts per outcome, and the first differences in full."""

    counts: Counter = field(default_factory=Counter)
    differences: list[str] = field(default_factory=list)

    def add(self, outcome: str, detail: str | None = None) -> None:
        self.counts[outcome] += 1
        if detail is not None and len(self.differences) < SHOWN_DIFFERENCES:
            self.differences.append(detail)

    @property
    def all_identical(self) -> bool:
        return set(self.counts) <= {"identical"} and self.counts["identical"] > 0

    def report(self) -> str:
        order = ("identical", "differ", "model not in store", "tampered", "no input", "unreadable")
        lines = [f"{name}: {self.counts.get(name, 0)}" for name in order]
        if self.differences:
            lines.append(f"first {len(self.differences)} problem record(s):")
            lines.extend(f"  {d}" for d in self.differences)
        return "\n".join(lines)


def read_records(lines: Iterable[str], summary: ReplaySummary) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every readable record; unreadable lines are counted and shown.

    Lines are what a file iterates (split at \\n only): a record's strings may hold U+2028 or
    U+0085, which JSON leaves unescaped and `str.splitlines` would split at.
    """
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            summary.add("unreadable", f"line {number}: not JSON ({exc})")
            continue
        missing = (
            [name for name in RECORD_FIELDS if name != "input" and name not in record]
            if isinstance(record, dict)
            else ["all"]
        )
        if missing:
            summary.add("unreadable", f"line {number}: not a decision record (missing {missing})")
            continue
        records.append((number, record))
    return records


def compare(record: Mapping[str, Any], pd: float, grade: str, reasons: Sequence[str]) -> list[str]:
    """What differs between a record and its replay (empty: identical)."""
    found = []
    if record["pd"] != pd:
        found.append(f"pd {record['pd']!r} -> {pd!r}")
    if record["grade"] != grade:
        found.append(f"grade {record['grade']!r} -> {grade!r}")
    if list(record["reasons"]) != list(reasons):
        found.append(f"reasons {record['reasons']} -> {list(reasons)}")
    return found


def replay_model_records(model: Any, records: Sequence[tuple[int, dict[str, Any]]], summary: ReplaySummary) -> None:
    """Re-score one model's records (inputs already checked against their hashes) and compare."""
    for start in range(0, len(records), REPLAY_CHUNK_ROWS):
        chunk = records[start : start + REPLAY_CHUNK_ROWS]
        canonical = InputCanonicaliser(model.schema)
        inputs = [canonical(record["input"]) for _, record in chunk]
        decision = model.decide(
            model.encoder.encode_records(inputs), [int(record["max_reasons"]) for _, record in chunk]
        )
        for (number, record), pd, grade, reasons in zip(
            chunk, decision.pd.tolist(), decision.grade, decision.reasons, strict=False
        ):
            found = compare(record, pd, grade, [r["code"] for r in reasons])
            if found:
                summary.add(
                    "differ", f"line {number} (uuid {record.get('uuid')!r}, {record['model_tag']}): " + "; ".join(found)
                )
            else:
                summary.add("identical")


def replay(lines: Iterable[str]) -> ReplaySummary:
    """Check every record's hash, then re-score it with its own model from the store."""
    from credit_pd.errors import ModelNotFoundError
    from credit_pd.model_store import load_from_store

    summary = ReplaySummary()
    by_model: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for number, record in read_records(lines, summary):
        by_model.setdefault(record["model_tag"], []).append((number, record))
    for tag, records in by_model.items():
        try:
            model = load_from_store(tag)
        except ModelNotFoundError:
            for number, _ in records:
                summary.add("model not in store", f"line {number}: model {tag!r} is not in the model store")
            continue
        replayable = []
        canonical = InputCanonicaliser(model.schema)
        for number, record in records:
            if record.get("input") is None:
                summary.add("no input", f"line {number}: written without its input (hash only); cannot be re-scored")
            elif input_sha256(canonical(record["input"])) != record["input_sha256"]:
                summary.add(
                    "tampered", f"line {number} (uuid {record.get('uuid')!r}): input does not match its input_sha256"
                )
            else:
                replayable.append((number, record))
        replay_model_records(model, replayable, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m credit_pd.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("records", type=Path, help="decision records, one JSON object per line")
    args = parser.parse_args(argv)
    if not args.records.is_file():
        print(f"error: records file {args.records} does not exist", file=sys.stderr)
        return 2
    with args.records.open(encoding="utf-8") as lines:
        summary = replay(lines)
    print(summary.report())
    return 0 if summary.all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
