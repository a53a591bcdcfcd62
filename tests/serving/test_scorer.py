"""Serving glue in-process: request validation, PD parity with train.py, exact explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap
from pydantic import TypeAdapter, ValidationError

from credit_pd.serving.settings import ServingSettings
from credit_pd.training.dataset import labelled_mask, load_dataset
from credit_pd.model_store import load_from_store
from credit_pd.client import requests_from_frame
from credit_pd.serving.contract import application_list_type, build_application_model
from credit_pd.serving.scorer import PDScorer



@pytest.fixture(scope="module")
def settings() -> ServingSettings:
    return ServingSettings(max_applications_per_request=50)


@pytest.fixture(scope="module")
def application_model(trained_run, settings):
    return build_application_model(load_from_store(trained_run.model_tag), settings)


@pytest.fixture(scope="module")
def scorer(trained_run) -> PDScorer:
    return PDScorer(load_from_store(trained_run.model_tag), trained_run.model_tag)


@pytest.fixture(scope="module")
def unlabelled(small_sample_path, schema) -> pd.DataFrame:
    frame = load_dataset(small_sample_path, schema)
    return frame[~labelled_mask(frame, schema)].head(200)


@pytest.fixture(scope="module")
def applications(unlabelled, schema, application_model):
    return [application_model.model_validate(r | {"top_k": "all"}) for r in requests_from_frame(unlabelled, schema)]


def test_pd_matches_training_predictions_file(scorer, applications, trained_run):
    csv = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    results = scorer.score(applications)
    assert [r.uuid for r in results] == [a.uuid for a in applications]
    np.testing.assert_allclose([r.pd for r in results], csv.loc[[a.uuid for a in applications]].to_numpy(), rtol=0, atol=1e-9)


def test_contributions_add_up_to_the_raw_score(scorer, applications):
    for result in scorer.score(applications[:50]):
        total = result.explanation.base_value + sum(c.contribution for c in result.explanation.contributions)
        assert total == pytest.approx(result.explanation.raw_score, abs=1e-9)
        assert scorer.model.calibrator.apply(np.array([result.explanation.raw_score]))[0] == pytest.approx(result.pd, abs=1e-12)


def test_contributions_agree_with_shap_tree_explainer(scorer, unlabelled):
    matrix = scorer.model.encoder.encode_frame(unlabelled.head(100))
    ours = scorer.model.explain(matrix)
    explainer = shap.TreeExplainer(scorer.model.booster)
    theirs = explainer.shap_values(matrix)
    np.testing.assert_allclose(ours.contributions, theirs, atol=1e-6)
    assert ours.base_value[0] == pytest.approx(float(np.ravel(explainer.expected_value)[0]), abs=1e-6)


def test_contributions_sorted_and_top_k_respected(scorer, applications):
    app = applications[0].model_copy(update={"top_k": 3})
    result = scorer.score([app])[0]
    magnitudes = [abs(c.contribution) for c in result.explanation.contributions]
    assert len(magnitudes) == 3 and magnitudes == sorted(magnitudes, reverse=True)
    full = scorer.score([applications[0]])[0]
    assert len(full.explanation.contributions) == len(scorer.feature_names)
    assert [c.feature for c in full.explanation.contributions[:3]] == [c.feature for c in result.explanation.contributions]


def test_explain_false_returns_same_pd_without_explanation(scorer, applications):
    plain = [a.model_copy(update={"explain": False}) for a in applications[:20]]
    mixed = plain[:10] + applications[10:20]
    without = scorer.score(plain)
    with_mixed = scorer.score(mixed)
    assert all(r.explanation is None for r in without)
    assert all(r.explanation is not None for r in with_mixed[10:])
    np.testing.assert_allclose([r.pd for r in without], [r.pd for r in with_mixed], atol=1e-12)


def test_unseen_category_is_scored_as_missing_with_a_warning(scorer, applications):
    app = applications[0]
    unseen = app.model_copy(update={"merchant_group": "Spaceships"})
    result = scorer.score([unseen])[0]
    assert any("merchant_group" in w and "not seen in training" in w for w in result.warnings)
    assert scorer.score([app])[0].warnings == []
    matrix = scorer.model.encoder.encode_records([unseen.model_dump()])
    assert np.isnan(matrix[0, scorer.feature_names.index("merchant_group")])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": "forty"}, "age"),
        ({"age": -1}, "age"),
        ({"age": float("nan")}, "age"),
        ({"time_hours": float("inf")}, "time_hours"),
        ({"has_paid": "yes"}, "has_paid"),
        ({"merchant_group": 3}, "merchant_group"),
        ({"merchant_group": None}, "merchant_group"),
        ({"shoe_size": 42}, "shoe_size"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_application_is_rejected_naming_index_and_field(applications, application_model, settings, change, field):
    batch = TypeAdapter(application_list_type(application_model, settings))
    good = applications[0].model_dump()
    with pytest.raises(ValidationError) as caught:
        batch.validate_python([good, good | change])
    locations = [e["loc"] for e in caught.value.errors()]
    assert any(loc[0] == 1 and loc[1] == field for loc in locations), locations


def test_batch_size_limits(applications, application_model, settings):
    batch = TypeAdapter(application_list_type(application_model, settings))
    good = applications[0].model_dump()
    with pytest.raises(ValidationError, match="at least 1 item"):
        batch.validate_python([])
    with pytest.raises(ValidationError, match="at most 50 items"):
        batch.validate_python([good] * 51)
    assert len(batch.validate_python(good)) == 1  # a single object is a batch of one


def test_reserved_option_names_cannot_be_features(schema, settings, scorer):
    import dataclasses

    from credit_pd.schema import DatasetSchema

    clashing = DatasetSchema.model_validate(
        schema.model_dump() | {"features": [*schema.model_dump()["features"], {"name": "explain", "type": "numeric"}], "example": None}
    )
    with pytest.raises(ValueError, match="reserved request field"):
        build_application_model(dataclasses.replace(scorer.model, schema=clashing), settings)


def _score_variants(scorer, application, field: str, values) -> list[float]:
    variants = [application.model_copy(update={field: v, "explain": False}) for v in values]
    return [r.pd for r in scorer.score(variants)]


@pytest.mark.parametrize("field", ["num_arch_dc_0_12m", "num_arch_dc_12_24m", "num_arch_rem_0_12m", "recovery_debt"])
def test_worse_payment_history_never_lowers_the_pd(scorer, applications, field):
    for application in applications[:25]:
        pds = _score_variants(scorer, application, field, [0.0, 1.0, 2.0, 5.0, 20.0] if field != "recovery_debt" else [0.0, 100.0, 5000.0])
        assert all(b >= a - 1e-12 for a, b in zip(pds, pds[1:])), f"{field}: PD fell as history worsened: {pds}"


def test_uuid_never_changes_the_pd(scorer, applications):
    renamed = [a.model_copy(update={"uuid": f"other-{i}"}) for i, a in enumerate(applications[:50])]
    assert [r.pd for r in scorer.score(renamed)] == [r.pd for r in scorer.score(applications[:50])]


def test_batcher_hold_time_is_capped_after_queueing_waits():
    from bentoml._internal.marshal.dispatcher import Optimizer

    from credit_pd.serving.runtime import cap_batcher_hold_time

    assert ServingSettings().max_batch_hold_ms == 0, "a lone request must not wait for company"
    try:
        assert cap_batcher_hold_time(10.0), "BentoML's batcher internals moved: revisit cap_batcher_hold_time"
        optimizer = Optimizer(max_latency=0.5)
        for _ in range(20):  # batches that waited 300 ms in a queue, as under overload
            optimizer.o_stat.append((8, 0.004, 0.3))
        optimizer.trigger_refresh()
        assert optimizer.wait == pytest.approx(0.010)
        optimizer.o_stat.clear()
        for _ in range(20):
            optimizer.o_stat.append((1, 0.002, 0.001))
        optimizer.trigger_refresh()
        assert optimizer.wait == pytest.approx(0.001), "short learned waits stay as BentoML learned them"
        assert cap_batcher_hold_time(0.0)
        optimizer.trigger_refresh()
        assert optimizer.wait == 0, "the default cap: no deliberate hold at all"
    finally:
        cap_batcher_hold_time(ServingSettings().max_batch_hold_ms)


def test_start_up_objects_are_frozen_out_of_gc_scans():
    import gc

    from credit_pd.serving.runtime import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert gc.isenabled(), "objects created after start-up must still be collected"
    finally:
        gc.unfreeze()


def test_schema_example_validates_and_scores(schema, application_model, scorer):
    assert schema.example is not None
    application = application_model.model_validate(schema.example)
    [result] = scorer.score([application])
    assert 0.0 <= result.pd <= 1.0
    assert result.explanation is not None and result.warnings == []
    assert application_model.model_json_schema()["example"]["age"] == schema.example["age"]


# ---------------------------------------------------------------- the fast answer path (issue 8) --

def _mixed_batch(applications):
    """Explained and unexplained rows, default / small / "all" top_k, an unseen category and an
    out-of-range age, in one merged batch: every branch of the whole-batch answer building."""
    batch = []
    for i, app in enumerate(applications[:60]):
        update = {"top_k": 10} if i % 3 == 0 else {"top_k": 3} if i % 3 == 1 else {}
        if i % 7 == 0:
            update["explain"] = False
        batch.append(app.model_copy(update=update))
    batch.append(applications[0].model_copy(update={"merchant_group": "Spaceships", "age": 99.0, "top_k": 5}))
    return batch


def test_answers_on_the_wire_are_the_documented_contract(scorer, applications):
    import orjson

    from credit_pd.serving.contract import PredictionOut

    batch = _mixed_batch(applications)
    answers = scorer.answers(batch)
    wire = TypeAdapter(list[PredictionOut]).validate_json(orjson.dumps(answers))
    assert wire == scorer.score(batch)
    assert [list(a) for a in answers] == [list(PredictionOut.model_fields)] * len(batch), "field order as documented"
    assert [a["uuid"] for a in answers] == [b.uuid for b in batch]
    unseen = answers[-1]
    assert unseen["warnings"] == [
        "merchant_group: value 'Spaceships' was not seen in training; scored as missing",
        f"age: value 99.0 is outside the training range [{scorer.model.encoder.numeric_ranges['age'][0]:g}, "
        f"{scorer.model.encoder.numeric_ranges['age'][1]:g}]; scored as the nearest seen value",
    ]
    assert all(a["explanation"] is None for a, b in zip(answers, batch) if not b.explain)


def test_whole_batch_ranking_equals_ranking_each_row_alone(scorer, applications):
    from credit_pd.explanation import rank_contributions

    batch = _mixed_batch(applications)
    answers = scorer.answers(batch)
    for application, answer in zip(batch, answers):
        if not application.explain:
            continue
        record = vars(application)
        alone = scorer.model.explain(scorer.model.encoder.encode_records([record]))
        top_k = None if application.top_k == "all" else application.top_k
        expected = rank_contributions(alone.contributions[0], scorer.feature_names, record, top_k)
        got = answer["explanation"]["contributions"]
        assert [c["feature"] for c in got] == [c.feature for c in expected]
        np.testing.assert_allclose([c["contribution"] for c in got], [c.contribution for c in expected], rtol=0, atol=1e-12)
        assert [c["value"] for c in got] == [c.value for c in expected]


def test_ranking_breaks_ties_in_feature_order():
    from credit_pd.explanation import top_contributions

    contributions = np.array([[0.0, -0.5, 0.0, 0.5, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    order, values = top_contributions(contributions, 4)
    assert order.tolist() == [[1, 3, 4, 0], [0, 1, 2, 3]], "equal magnitudes keep the schema's feature order"
    np.testing.assert_array_equal(values, np.take_along_axis(contributions, order, axis=1))


def test_encoder_direct_lookup_matches_the_canonical_path(scorer):
    from credit_pd.features import canonical_category

    encoder = scorer.model.encoder
    for name, vocab in encoder.categorical.items():
        for code, label in enumerate(vocab):
            spellings = [label]
            if encoder.numeric_coded(name):
                spellings += [float(label), f"{float(label)}"]
            encoded = encoder.encode_records([{name: spelling} for spelling in spellings])
            column = encoded[:, encoder.feature_names.index(name)]
            assert column.tolist() == [float(code)] * len(spellings), (name, spellings)
            assert canonical_category(label) == label
        unseen = encoder.encode_records([{name: "never-seen-label"}])
        assert np.isnan(unseen[0, encoder.feature_names.index(name)])


def test_category_fast_path_returns_what_the_full_check_returns(application_model):
    from types import SimpleNamespace

    from credit_pd.serving.settings import UNSEEN_POLICIES

    for rule in application_model.category_rules.values():
        assert rule.accepted_as_is <= rule.label_set
        slow = type(rule)(name=rule.name, labels=rule.labels, numeric_coded=rule.numeric_coded)
        slow.__dict__["accepted_as_is"] = frozenset()  # the full check only
        for policy in UNSEEN_POLICIES:
            info = SimpleNamespace(data={"unseen_categories": policy})
            for label in rule.accepted_as_is:
                assert rule.validate(label, info, policy) == slow.validate(label, info, policy) == label


def test_orjson_output_spec_is_in_effect_and_writes_the_answers(scorer, applications):
    """Fails when BentoML moves the hook `prediction_output_spec` relies on (then answers would be
    re-validated and dumped by the stock path: same bytes' meaning, several times slower)."""
    import asyncio
    import json

    import orjson
    from _bentoml_impl.serde import JSONSerde

    from credit_pd.serving.contract import PredictionOut
    from credit_pd.serving.runtime import prediction_output_spec

    spec, in_effect = prediction_output_spec(PredictionOut)
    assert in_effect, "BentoML's api_endpoint no longer renders results with output_spec.to_http_response(output, serde)"
    answers = scorer.answers(_mixed_batch(applications)[:5])
    response = asyncio.run(spec.to_http_response(answers, JSONSerde()))
    assert response.body == orjson.dumps(answers) and response.media_type == "application/json"
    stock = asyncio.run(spec.to_http_response(scorer.score(_mixed_batch(applications)[:5]), JSONSerde()))
    body = b"".join(stock.body_iterator) if hasattr(stock, "body_iterator") else stock.body
    assert json.loads(body) == json.loads(response.body), "models still take the stock path, same answer"
    assert spec.model_json_schema()["items"]["$ref"].endswith("PredictionOut")


def test_small_batches_are_scored_on_the_event_loop_large_ones_in_a_thread(scorer, applications, monkeypatch):
    import asyncio
    import threading

    threads: list[int] = []
    original = PDScorer.answers

    def recording(self, batch):
        threads.append(threading.get_ident())
        return original(self, batch)

    monkeypatch.setattr(PDScorer, "answers", recording)

    async def run():
        small = await scorer.answers_async(applications[:2], inline_max_rows=2)
        large = await scorer.answers_async(applications[:3], inline_max_rows=2)
        return threading.get_ident(), small, large

    loop_thread, small, large = asyncio.run(run())
    assert threads[0] == loop_thread, "a small batch must not pay a thread hop"
    assert threads[1] != loop_thread, "a large batch must not block the event loop"
    assert small == original(scorer, applications[:2]) and large == original(scorer, applications[:3])
    assert ServingSettings().inline_max_rows >= 1


def test_predict_is_not_traced_unless_asked_for(trained_run):
    """Fails when BentoML stops reading the service's `tracing.excluded_urls` (then every request
    would pay for OpenTelemetry spans again)."""
    import importlib
    import sys

    from bentoml._internal.configuration.containers import BentoMLContainer

    assert ServingSettings().request_tracing is False
    service = sys.modules.get("service") or importlib.import_module("service")
    assert service.CreditPDService.config["tracing"] == {"excluded_urls": ["/predict"]}
    service.CreditPDService.inject_config()  # what `bentoml serve` does before starting workers
    excluded = BentoMLContainer.tracing_excluded_urls.get()
    assert excluded.url_disabled("http://127.0.0.1:3000/predict")
    assert not excluded.url_disabled("http://127.0.0.1:3000/readyz")


# ------------------------------------------------ which model a process serves ----------------

def test_a_built_bento_serves_its_own_model_unless_a_tag_is_set(tmp_path):
    from credit_pd.serving.runtime import model_tag_to_serve

    (tmp_path / "src").mkdir()
    service_file = tmp_path / "src" / "service.py"
    (tmp_path / "bento.yaml").write_text(
        "services:\n- name: credit_pd_service\n  models:\n  - tag: credit_pd_model:built4it\n    module: bentoml.lightgbm\n"
    )
    assert model_tag_to_serve("credit_pd_model:latest", False, service_file) == "credit_pd_model:built4it"
    assert model_tag_to_serve("credit_pd_model:pinned", True, service_file) == "credit_pd_model:pinned"
    source_tree = tmp_path / "project" / "repo" / "service.py"
    assert model_tag_to_serve("credit_pd_model:latest", False, source_tree) == "credit_pd_model:latest"


def test_large_batches_run_lightgbm_on_more_threads_with_identical_answers(trained_run, applications, monkeypatch):
    import lightgbm as lgb

    threaded = PDScorer(load_from_store(trained_run.model_tag), trained_run.model_tag, large_batch_rows=50, large_batch_threads=2)
    calls: list[int] = []
    predict = lgb.Booster.predict

    def recording(self, data, *args, **kwargs):
        calls.append(kwargs.get("num_threads"))
        return predict(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", recording)
    small = threaded.answers(applications[:49])
    large = threaded.answers(applications[:120])
    assert calls == [1, 2], "49 rows on the model's one thread, 120 (>= 50) on two"
    single = PDScorer(load_from_store(trained_run.model_tag), trained_run.model_tag)
    assert large == single.answers(applications[:120]) and small == single.answers(applications[:49])
