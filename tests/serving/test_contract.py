"""The request contract built from the stored model: spellings, the unseen-value policy, limits, OpenAPI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from credit_pd.serving.contract import application_list_type, build_application_model, build_input_spec
from credit_pd.serving.settings import ServingSettings

CODED = "status_last_archived_0_24m"  # trained as 0/1/2/3: a numeric code
TEXT = "merchant_group"  # trained as labels


@pytest.fixture(scope="module")
def example(application_model) -> dict[str, Any]:
    return dict(application_model.example_application)


def errors_of(model, record: dict) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(record)
    return caught.value.errors()


def test_request_model_comes_from_the_stored_model(application_model, model):
    features = [
        name
        for name in application_model.model_fields
        if name not in ("unseen_categories", "uuid", "explain", "top_k", "max_reasons")
    ]
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
    unseen = application_model.model_validate(
        example | {TEXT: "Spaceships", "unseen_categories": "score_as_missing", "explain": False}
    )
    missing = (
        application_model.model_validate(example | {TEXT: None, "explain": False})
        if scorer.model.schema.feature(TEXT).nullable
        else None
    )
    [result] = scorer.score([unseen])
    assert any(TEXT in w and "not seen in training" in w for w in result.warnings)
    matrix = scorer.model.encoder.encode_records([unseen.model_dump()])
    assert np.isnan(matrix[0, scorer.feature_names.index(TEXT)])
    if missing is not None:
        assert scorer.score([missing])[0].pd == result.pd


def test_deployment_default_and_per_request_override(model, example):
    lenient = build_application_model(
        model.schema, model.encoder, ServingSettings(unseen_categories="score_as_missing")
    )
    assert getattr(lenient.model_validate(example | {TEXT: "Spaceships"}), TEXT) == "Spaceships"
    [error] = errors_of(lenient, example | {TEXT: "Spaceships", "unseen_categories": "reject"})
    assert error["type"] == "unseen_category"
    assert errors_of(lenient, example | {"unseen_categories": "sometimes"})[0]["loc"] == ("unseen_categories",)


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


def test_reserved_option_names_cannot_be_features(model, settings):

    from credit_pd.schema import DatasetSchema

    clashing = DatasetSchema.model_validate(
        model.schema.model_dump()
        | {
            "features": [
                *model.schema.model_dump()["features"],
                {"name": "unseen_categories", "type": "numeric", "never_a_reason": True},
            ],
            "example": None,
        }
    )
    with pytest.raises(ValueError, match="reserved request field"):
        build_application_model(clashing, model.encoder, settings)


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


def test_schema_example_validates_and_scores(schema, application_model, scorer):
    assert schema.example is not None
    application = application_model.model_validate(schema.example)
    [result] = scorer.score([application])
    assert 0.0 <= result.pd <= 1.0
    assert result.explanation is not None and result.warnings == []
    assert application_model.model_json_schema()["example"]["age"] == schema.example["age"]


def test_category_fast_path_returns_what_the_full_check_returns(application_model):
    from types import SimpleNamespace

    from credit_pd.categories import UNSEEN_POLICIES

    for rule in application_model.category_rules.values():
        assert rule.accepted_as_is <= rule.label_set
        slow = type(rule)(name=rule.name, labels=rule.labels, numeric_coded=rule.numeric_coded)
        slow.__dict__["accepted_as_is"] = frozenset()  # the full check only
        for policy in UNSEEN_POLICIES:
            info = SimpleNamespace(data={"unseen_categories": policy})
            for label in rule.accepted_as_is:
                assert rule.validate(label, info, policy) == slow.validate(label, info, policy) == label


# ------------------------------------------------- the parsed document and the body ----------

# Values of every JSON type and edge, put into every field of a valid application in turn.
EDGE_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 41, 10**30, -(10**400), 0.5, -0.0, 1e308, "1", "1.0", "01", "", "x" * 300,
    "Entertainment", [], [1], {}, {"a": 1},
]  # fmt: skip


def _bodies(example: dict[str, Any]) -> list[bytes]:
    import json

    bodies = [
        json.dumps({"applications": example | {field: value}}).encode()
        for field in [*example, "unseen_categories", "explain", "top_k", "max_reasons", "shoe_size"]
        for value in EDGE_VALUES
    ]
    return [
        *bodies,
        json.dumps({"applications": [example, example | {"age": "old"}]}).encode(),
        b'{"applications": 5}',
        b'{"applications": [1]}',
        b'{"applications": []}',
        b"[]",
        b"{}",
        b'{"applications": {"age": NaN}}',
        b'{"applications": {"age": Infinity}}',
        b'{"applications": {"age": 1E400}}',
    ]


def _outcome(validate) -> tuple[str, Any]:
    try:
        return "valid", validate().model_dump()
    except ValidationError as exc:
        return "invalid", exc.errors(include_url=False)


def test_the_parsed_document_validates_as_the_body_does(application_model, settings, example):
    """StrictInput validates jiter's document in Python mode; JSON mode of the body is the contract."""
    import jiter

    request = build_input_spec(application_list_type(application_model, settings))
    bodies = _bodies(example)
    assert len(bodies) > 1000
    compared = {"valid": 0, "invalid": 0}
    for body in bodies:
        from_body = _outcome(lambda body=body: request.model_validate_json(body))
        from_document = _outcome(lambda body=body: request.model_validate(jiter.from_json(body)))
        assert from_body[0] == from_document[0], body
        if from_body[0] == "valid":
            assert from_body[1] == from_document[1], body
        compared[from_body[0]] += 1
    assert compared["valid"] > 100 and compared["invalid"] > 100, compared


class _Request:
    """What `StrictInput.from_http_request` reads of a Starlette request."""

    def __init__(self, body: bytes, scope: dict) -> None:
        self._body, self.scope = body, scope

    async def body(self) -> bytes:
        return self._body


def _from_http(request_model, body: bytes, with_document: bool):
    import asyncio

    import jiter

    from credit_pd.serving.middleware import PARSED_BODY_KEY

    scope = {PARSED_BODY_KEY: jiter.from_json(body)} if with_document else {}

    class NoSerde:  # BentoML's parse is not reached when the middleware left a document
        def __getattr__(self, name):
            raise AssertionError(f"serde.{name} used")

    return asyncio.run(request_model.from_http_request(_Request(body, scope), NoSerde()))


def test_from_http_request_validates_the_middlewares_document_without_parsing_the_body_again(
    application_model, settings, example
):
    import json

    request = build_input_spec(application_list_type(application_model, settings))
    body = json.dumps({"applications": [example, example | {"age": 30.0}]}).encode()
    parsed = _from_http(request, body, with_document=True)
    assert parsed == request.model_validate_json(body)


def test_a_rejected_document_gets_the_errors_of_the_body_in_json_wording(application_model, settings, example):
    import json

    request = build_input_spec(application_list_type(application_model, settings))
    body = json.dumps({"applications": [example, 7]}).encode()
    with pytest.raises(ValidationError) as from_document:
        _from_http(request, body, with_document=True)
    with pytest.raises(ValidationError) as from_body:
        request.model_validate_json(body)
    assert from_document.value.errors() == from_body.value.errors()
    assert from_document.value.errors()[0]["msg"] == "Input should be an object"  # JSON's word, not "dictionary"
