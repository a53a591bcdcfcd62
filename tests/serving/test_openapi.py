"""The OpenAPI document of POST /predict: OpenAPI 3.0, true to the request model and the stored model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from credit_pd.categories import canonical_category
from credit_pd.serving.openapi import openapi_document

TEXT = "merchant_group"  # trained as labels


@pytest.fixture(scope="module")
def document(application_model, model, settings) -> dict:
    base = {
        "openapi": "3.0.2",
        "info": {"title": "t", "version": "1"},
        "paths": {"/predict": {"post": {"operationId": "op"}}},
        "components": {"schemas": {}},
    }
    return openapi_document(base, application_model, model.schema, model.encoder, settings).document


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
