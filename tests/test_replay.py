"""Replay: recorded decisions re-scored from the store are identical; a changed PD differs, a changed input is tampered."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from credit_pd.replay import main, replay


@pytest.fixture(scope="module")
def records_file(trained_run, small_sample_path, tmp_path_factory) -> Path:
    """Decision records the service's scorer wrote for 120 sample rows (mixed max_reasons, explain on/off)."""
    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import labelled_mask, load_dataset
    from credit_pd.model_store import load_from_store
    from credit_pd.serving.contract import build_application_model
    from credit_pd.serving.records import DecisionRecorder, decision_handler
    from credit_pd.serving.scorer import PDScorer
    from credit_pd.serving.settings import ServingSettings

    model = load_from_store(trained_run.model_tag)
    frame = load_dataset(small_sample_path, model.schema)
    rows = requests_from_frame(frame[~labelled_mask(frame, model.schema)].head(120), model.schema)
    application = build_application_model(model.schema, model.encoder, ServingSettings())
    apps = [application.model_validate(r | {"max_reasons": i % 5, "explain": i % 2 == 0}) for i, r in enumerate(rows)]
    path = tmp_path_factory.mktemp("records") / "records.jsonl"
    recorder = DecisionRecorder(trained_run.model_tag, model.schema, handler=decision_handler(path))
    scorer = PDScorer(model, trained_run.model_tag, recorder=recorder)
    for start in (0, 1, 50):  # three batches of different sizes: a row's answer must not depend on its batch
        scorer.answers(apps[start : {0: 1, 1: 50, 50: 120}[start]])
    for handler in logging.getLogger("credit_pd.decisions").handlers:
        handler.flush()
    return path


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in records))
    return path


def test_recorded_decisions_replay_identically(records_file, capsys):
    assert len(_lines(records_file)) == 120
    assert main([str(records_file)]) == 0
    out = capsys.readouterr().out
    assert "identical: 120" in out and "differ: 0" in out and "tampered: 0" in out


def test_a_changed_pd_is_reported_as_differing(records_file, tmp_path, capsys):
    records = _lines(records_file)
    records[3]["pd"] = records[3]["pd"] * (1 + 1e-12)
    records[7]["reasons"] = list(reversed(records[7]["reasons"])) + ["NAME_IN_EMAIL"]
    assert main([str(_write(tmp_path / "changed.jsonl", records))]) == 1
    out = capsys.readouterr().out
    assert "identical: 118" in out and "differ: 2" in out
    assert "line 4" in out and "pd " in out and "line 8" in out and "reasons" in out


def test_a_changed_input_is_reported_as_tampered(records_file, tmp_path):
    records = _lines(records_file)
    records[0]["input"]["num_arch_dc_0_12m"] = (records[0]["input"]["num_arch_dc_0_12m"] or 0.0) + 1.0
    summary = replay(_write(tmp_path / "tampered.jsonl", records).read_text().splitlines())
    assert summary.counts["tampered"] == 1 and summary.counts["identical"] == 119 and not summary.all_identical


def test_unknown_models_hash_only_records_and_garbage_are_counted_not_passed(records_file, tmp_path):
    records = _lines(records_file)[:3]
    records[0]["model_tag"] = "credit_pd_model:notinthestore"
    records[1]["input"] = None
    path = _write(tmp_path / "mixed.jsonl", records)
    path.write_text(path.read_text() + "{not json\n" + '{"pd": 0.1}\n')
    summary = replay(path.read_text().splitlines())
    assert dict(summary.counts) == {"model not in store": 1, "no input": 1, "identical": 1, "unreadable": 2}
    assert not summary.all_identical and main([str(path)]) == 1


def test_an_empty_or_absent_file_is_not_a_pass(tmp_path):
    assert main([str(_write(tmp_path / "empty.jsonl", []))]) == 1
    assert main([str(tmp_path / "absent.jsonl")]) == 2


def test_a_record_with_line_separators_inside_its_values_replays(records_file, tmp_path):
    """JSON leaves U+2028 and U+0085 unescaped: the file is read line by line at \\n only."""
    records = _lines(records_file)[:2]
    records[0]["uuid"] = "a\u2028b\x85c"
    path = _write(tmp_path / "separators.jsonl", records)
    assert main([str(path)]) == 0
