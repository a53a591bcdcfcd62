"""Serving glue in-process: request validation, PD parity with train.py, exact explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap
from pydantic import TypeAdapter

from credit_pd.model_store import load_from_store
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings


def test_pd_matches_training_predictions_file(scorer, applications, trained_run):
    csv = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    results = scorer.score(applications)
    assert [r.uuid for r in results] == [a.uuid for a in applications]
    np.testing.assert_allclose(
        [r.pd for r in results], csv.loc[[a.uuid for a in applications]].to_numpy(), rtol=0, atol=1e-9
    )


def test_contributions_add_up_to_the_raw_score(scorer, applications):
    for result in scorer.score(applications[:50]):
        total = result.explanation.base_value + sum(c.contribution for c in result.explanation.contributions)
        assert total == pytest.approx(result.explanation.raw_score, abs=1e-9)
        assert scorer.model.calibrator.apply(np.array([result.explanation.raw_score]))[0] == pytest.approx(
            result.pd, abs=1e-12
        )


def test_contributions_agree_with_shap_tree_explainer(scorer, unlabelled):
    """Trees' part: shap's TreeExplainer per booster; GLM part (any hybrid family): coefficient x centred design."""
    model = scorer.model
    matrix = model.encoder.encode_frame(unlabelled.head(100))
    ours = model.explain(matrix)
    weights = model.weights
    theirs = np.zeros_like(ours.contributions)
    base = weights.offset
    for weight, booster in zip(weights.trees, model.boosters, strict=False):
        if booster.num_trees():
            explainer = shap.TreeExplainer(booster)
            theirs += weight * explainer.shap_values(matrix)
            base += weight * float(np.ravel(explainer.expected_value)[0])
    if model.linear is not None:
        design = model.linear.design.transform(matrix)
        per_column = (design - model.linear.means) * model.linear.coefficients
        for j in range(len(model.feature_names)):
            theirs[:, j] += weights.linear * per_column[:, model.linear.design.feature_of_column == j].sum(axis=1)
        base += weights.linear * (model.linear.intercept + model.linear.means @ model.linear.coefficients)
    np.testing.assert_allclose(ours.contributions, theirs, atol=1e-6)
    assert ours.base_value[0] == pytest.approx(base, abs=1e-6)


def test_contributions_sorted_and_top_k_respected(scorer, applications):
    app = applications[0].model_copy(update={"top_k": 3})
    result = scorer.score([app])[0]
    magnitudes = [abs(c.contribution) for c in result.explanation.contributions]
    assert len(magnitudes) == 3 and magnitudes == sorted(magnitudes, reverse=True)
    full = scorer.score([applications[0]])[0]
    assert len(full.explanation.contributions) == len(scorer.feature_names)
    assert [c.feature for c in full.explanation.contributions[:3]] == [
        c.feature for c in result.explanation.contributions
    ]


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


# ---------------------------------------------------------------- the fast answer path ----------


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
    assert all(a["explanation"] is None for a, b in zip(answers, batch, strict=False) if not b.explain)


def test_whole_batch_ranking_equals_ranking_each_row_alone(scorer, applications):
    from credit_pd.explanation import top_contributions

    batch = _mixed_batch(applications)
    answers = scorer.answers(batch)
    for application, answer in zip(batch, answers, strict=False):
        if not application.explain:
            continue
        record = vars(application)
        alone = scorer.model.explain(scorer.model.encoder.encode_records([record]))
        top_k = len(scorer.feature_names) if application.top_k == "all" else application.top_k
        order, values = top_contributions(alone.contributions, top_k)
        expected = [scorer.feature_names[i] for i in order[0]]
        got = answer["explanation"]["contributions"]
        assert [c["feature"] for c in got] == expected
        np.testing.assert_allclose([c["contribution"] for c in got], values[0], rtol=0, atol=1e-12)
        assert [c["value"] for c in got] == [record[name] for name in expected]


def test_ranking_breaks_ties_in_feature_order():
    from credit_pd.explanation import top_contributions

    contributions = np.array([[0.0, -0.5, 0.0, 0.5, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    order, values = top_contributions(contributions, 4)
    assert order.tolist() == [[1, 3, 4, 0], [0, 1, 2, 3]], "equal magnitudes keep the schema's feature order"
    np.testing.assert_array_equal(values, np.take_along_axis(contributions, order, axis=1))


def test_encoder_direct_lookup_matches_the_canonical_path(scorer):
    from credit_pd.categories import canonical_category

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


# ------------------------------------------------ which model a process serves ----------------


def test_large_batches_run_lightgbm_on_more_threads_with_identical_answers(trained_run, applications, monkeypatch):
    import lightgbm as lgb

    threaded = PDScorer(
        load_from_store(trained_run.model_tag), trained_run.model_tag, large_batch_rows=50, large_batch_threads=2
    )
    calls: list[int] = []
    predict = lgb.Booster.predict

    def recording(self, data, *args, **kwargs):
        calls.append(kwargs.get("num_threads"))
        return predict(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", recording)
    small = threaded.answers(applications[:49])
    small_calls, calls[:] = list(calls), []
    large = threaded.answers(applications[:120])
    # Every LightGBM call of a batch on the same count (a blend has two boosters, a GLM none).
    assert set(small_calls) <= {1} and set(calls) <= {2}, "49 rows on the model's one thread, 120 (>= 50) on two"
    assert (
        calls or not any(b.num_trees() for b in threaded.model.boosters) or getattr(threaded.model, "tree_tables", ())
    )
    single = PDScorer(load_from_store(trained_run.model_tag), trained_run.model_tag)
    assert large == single.answers(applications[:120]) and small == single.answers(applications[:49])
