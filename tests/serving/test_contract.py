"""The request contract built from the stored model: spellings, the unseen-value policy, limits, OpenAPI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from credit_pd.features import canonical_category
from credit_pd.model_store import load_from_store
from credit_pd.serving.contract import (
    CODE_SPELLING,
    CategoryRule,
    application_list_type,
    build_application_model,
    build_input_spec,
    openapi_document,
)
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings

import re

CODED = "status_last_archived_0_24m"  # trained as 0/1/2/3: a numeric code
TEXT = "merchant_group"  # trained as labels


@pytest.fixture(scope="module")
def model(trained_run):
    return load_from_store(trained_run.model_tag)


@pytest.fixture(scope="module")
def settings() -> ServingSettings:
    return ServingSettings(max_applications_per_request=50)


@pytest.fixture(scope="module")
def application_model(model, settings):
    return build_application_model(model, settings)


@pytest.fixture(scope="module")
def scorer(model, trained_run) -> PDScorer:
    return PDScorer(model, trained_run.model_tag)


@pytest.fixture(scope="module")
def example(application_model) -> dict[str, Any]:
    return dict(application_model.example_application)


def errors_of(model, record: dict) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(record)
    return caught.value.errors()


def test_request_model_comes_from_the_stored_model(application_model, model):
    features = [name for name in application_model.model_fields if name not in ("unseen_categories", "uuid", "explain", "top_k")]
    assert features == list(model.schema.feature_names)
    description = application_model.model_fields[TEXT].description
    assert all(label in description for label in model.encoder.categorical[TEXT])
    low, high = model.encoder.numeric_ranges["age"]
    assert f"Training range [{low:g}, {high:g}]" in application_model.model_fields["age"].description


def test_four_spellings_of_a_code_are_one_category_and_one_pd(application_model, scorer, example):
    assert scorer.model.encoder.numeric_coded(CODED)
    spellings = [1, 1.0, "1", "1.0"]
    validated = [application_model.model_validate(example | {CODED: s, "explain": False}) for s in spellings]
    assert {getattr(a, CODED) for a in validated} == {"1"}
    results = scorer.score(validated)
    assert len({r.pd for r in results}) == 1, [r.pd for r in results]
    assert all(r.warnings == [] for r in results)


@pytest.mark.parametrize("value", ["01", "+1", "1e0", "-0", "1.", "abc", "", True])
def test_malformed_codes_are_rejected(application_model, example, value):
    errors = errors_of(application_model, example | {CODED: value})
    assert all(e["loc"][0] == CODED for e in errors), errors


def test_text_categories_take_strings_only(application_model, example):
    errors = errors_of(application_model, example | {TEXT: 7})
    assert errors[0]["loc"][0] == TEXT


def test_unseen_category_is_rejected_by_default_naming_field_and_allowed_values(application_model, example, model):
    [error] = errors_of(application_model, example | {TEXT: "Spaceships"})
    assert error["loc"] == (TEXT,) and error["type"] == "unseen_category"
    assert model.encoder.categorical[TEXT][0] in error["msg"] and "score_as_missing" in error["msg"]
    [error] = errors_of(application_model, example | {CODED: 9})
    assert error["loc"] == (CODED,) and error["type"] == "unseen_category"


def test_per_request_score_as_missing_scores_unseen_as_missing_with_a_warning(application_model, scorer, example):
    unseen = application_model.model_validate(example | {TEXT: "Spaceships", "unseen_categories": "score_as_missing", "explain": False})
    missing = application_model.model_validate(example | {TEXT: None, "explain": False}) if scorer.model.schema.feature(TEXT).nullable else None
    [result] = scorer.score([unseen])
    assert any(TEXT in w and "not seen in training" in w for w in result.warnings)
    matrix = scorer.model.encoder.encode_records([unseen.model_dump()])
    assert np.isnan(matrix[0, scorer.feature_names.index(TEXT)])
    if missing is not None:
        assert scorer.score([missing])[0].pd == result.pd


def test_deployment_default_and_per_request_override(model, example):
    lenient = build_application_model(model, ServingSettings(unseen_categories="score_as_missing"))
    assert getattr(lenient.model_validate(example | {TEXT: "Spaceships"}), TEXT) == "Spaceships"
    [error] = errors_of(lenient, example | {TEXT: "Spaceships", "unseen_categories": "reject"})
    assert error["type"] == "unseen_category"
    assert errors_of(lenient, example | {"unseen_categories": "sometimes"})[0]["loc"] == ("unseen_categories",)


def test_known_code_pattern_matches_exactly_the_spellings_of_known_codes():
    rule = CategoryRule(name="s", labels=("0", "1", "2.5", "-3"), numeric_coded=True)
    candidates = {f"{sign}{int_part}{frac}" for sign in ("", "-", "+") for int_part in ("0", "1", "2", "3", "10", "01", "")
                  for frac in ("", ".", ".0", ".00", ".5", ".50", ".05", "e0")}
    for text in sorted(candidates):
        if not re.fullmatch(CODE_SPELLING, text):
            continue
        assert rule.is_known(text) == (canonical_category(text) in rule.label_set), text
    assert rule.is_known(2.5) and rule.is_known(-3) and rule.is_known(1.0) and not rule.is_known(4)


def test_count_cap_is_checked_before_any_application_is_validated(application_model, settings):
    batch = TypeAdapter(application_list_type(application_model, settings))
    with pytest.raises(ValidationError) as caught:
        batch.validate_python([{"not": "an application"}] * (settings.max_applications_per_request + 1))
    assert [e["type"] for e in caught.value.errors()] == ["too_long"]
    assert "at most 50 items" in str(caught.value)


def test_envelope_rejects_unknown_top_level_keys(application_model, settings, example):
    request = build_input_spec(application_list_type(application_model, settings))
    assert len(request.model_validate({"applications": example}).applications) == 1
    with pytest.raises(ValidationError) as caught:
        request.model_validate({"applications": example, "applicationz": []})
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]


# ---------------------------------------------------------------- the OpenAPI document ----------

@pytest.fixture(scope="module")
def document(application_model, model, settings) -> dict:
    base = {"openapi": "3.0.2", "info": {"title": "t", "version": "1"}, "paths": {"/predict": {"post": {"operationId": "op"}}},
            "components": {"schemas": {}}}
    return openapi_document(base, application_model, model, settings)


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_document_is_openapi_3_0(document):
    assert not [n for n in walk(document) if "const" in n or "examples" in n]
    assert not [n for n in walk(document) if n.get("type") == "null" or isinstance(n.get("type"), list)]
    for node in walk(document):
        if node.get("nullable") and "enum" in node:
            assert None in node["enum"], node  # OpenAPI 3.0.3: a nullable enum lists null


def test_document_states_the_contract(document, model, settings):
    operation = document["paths"]["/predict"]["post"]
    assert operation["requestBody"]["required"] is True
    assert {"200", "400", "413", "415", "503"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    detail = schemas["ValidationErrorOut"]["properties"]["detail"]
    assert detail["type"] == "array"
    forms = schemas["PredictRequest"]["properties"]["applications"]["anyOf"]
    assert forms[0] == {"$ref": "#/components/schemas/Application"}  # the single-object form
    assert forms[1]["maxItems"] == settings.max_applications_per_request
    application = schemas["Application"]
    assert application["additionalProperties"] is False
    assert application["properties"]["unseen_categories"]["enum"] == ["reject", "score_as_missing"]
    assert application["properties"]["unseen_categories"]["default"] == "reject"
    known = application["anyOf"][0]["properties"]
    text_enum = known[TEXT]["enum"]
    assert text_enum == list(model.encoder.categorical[TEXT])
    assert application["anyOf"][1]["required"] == ["unseen_categories"]


def test_documented_example_is_valid_and_in_canonical_spelling(document, application_model):
    example = document["components"]["schemas"]["Application"]["example"]
    application_model.model_validate(example)
    assert json.dumps(example)  # JSON-ready
    for name in application_model.category_rules:
        value = example[name]
        assert value is None or value == canonical_category(value)


def test_reserved_option_names_cannot_be_features(model, settings):
    import dataclasses

    from credit_pd.schema import DatasetSchema

    clashing = DatasetSchema.model_validate(
        model.schema.model_dump() | {"features": [*model.schema.model_dump()["features"], {"name": "unseen_categories", "type": "numeric"}], "example": None}
    )
    with pytest.raises(ValueError, match="reserved request field"):
        build_application_model(dataclasses.replace(model, schema=clashing), settings)
