"""The OpenAPI document of `POST /predict`, built from the same rules that validate requests.

BentoML 1.4 generates a document from the input model, but collapses any `anyOf` to its first
branch (so the single-object form and the unseen-category policy vanish), declares the 400's
`detail` a string although it is a list, and omits `required` on the request body and the 413/415
answers. This module writes the `/predict` part from the stored model's schema and category rules
and the request model's own field descriptions (each written once, in contract.py); the
schemathesis test (tests/serving/test_service.py) holds document and validation together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from credit_pd.categories import CODE_SPELLING, UNSEEN_POLICIES, CategoryRule
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema, FeatureType
from credit_pd.serving.contract import (
    CATEGORY_MAX_LENGTH,
    FLOAT_MAX,
    UNSEEN_POLICY_DOC,
    UUID_MAX_LENGTH,
    ErrorOut,
    PredictionOut,
    ValidationErrorOut,
    feature_description,
)
from credit_pd.serving.settings import ServingSettings

REF_TEMPLATE = "#/components/schemas/{model}"


def permissive_category_schema(rule: CategoryRule) -> dict[str, Any]:
    """Any well-formed value (what `score_as_missing` accepts)."""
    text: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": CATEGORY_MAX_LENGTH}
    if not rule.numeric_coded:
        return text
    return {
        "anyOf": [
            {"type": "string", "pattern": f"^({CODE_SPELLING})$"},
            {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX},
        ]
    }


def known_category_schema(rule: CategoryRule) -> dict[str, Any]:
    """Only the values seen in training (what `reject` accepts), listed."""
    branches: list[dict[str, Any]] = []
    if rule.text_labels:
        branches.append({"type": "string", "enum": list(rule.text_labels)})
    if rule.known_code_pattern is not None:
        branches.append({"type": "string", "pattern": f"^{rule.known_code_pattern}$"})
        if rule.numeric_coded:
            branches.append({"type": "number", "enum": [_as_number(c) for c in rule.code_labels]})
    if not branches:  # a column that was all missing in training: nothing is known
        return {"type": "string", "enum": [], "description": "no value was seen in training"}
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _as_number(code: str) -> int | float:
    number = float(code)
    return int(number) if number.is_integer() else number


def application_openapi_schema(
    application_model: type[BaseModel], schema: DatasetSchema, encoder: FeatureEncoder, settings: ServingSettings
) -> dict[str, Any]:
    """The Application component, written from the same rules the request model validates with.

    OpenAPI 3.0: `nullable` rather than a null type, `enum` rather than `const`. Categories are
    permissive in `properties` and listed in the first `anyOf` branch: an application is valid
    when every category was seen in training, or when it asks for `score_as_missing` (or the
    deployment's default is `score_as_missing` and it does not ask for `reject`).
    """
    rules: dict[str, CategoryRule] = application_model.category_rules  # type: ignore[attr-defined]

    def described(option: str) -> str | None:
        """An option's description, as the request model declares it (written once, in contract.py)."""
        return application_model.model_fields[option].description

    properties: dict[str, Any] = {
        "unseen_categories": {
            "type": "string",
            "enum": list(UNSEEN_POLICIES),
            "default": settings.unseen_categories,
            "description": described("unseen_categories"),
        },
    }
    known: dict[str, Any] = {}
    for spec in schema.features:
        if spec.type is FeatureType.NUMERIC:
            prop: dict[str, Any] = {
                "type": "number",
                "minimum": spec.minimum if spec.minimum is not None else -FLOAT_MAX,
                "maximum": spec.maximum if spec.maximum is not None else FLOAT_MAX,
            }
        elif spec.type is FeatureType.BOOLEAN:
            prop = {"type": "boolean"}
        else:
            prop = permissive_category_schema(rules[spec.name])
            known[spec.name] = _nullable(known_category_schema(rules[spec.name]), spec.nullable)
        properties[spec.name] = {
            **_nullable(prop, spec.nullable),
            "description": feature_description(spec, encoder, rules),
        }
    properties["uuid"] = {
        "type": "string",
        "maxLength": UUID_MAX_LENGTH,
        "nullable": True,
        "description": described("uuid"),
    }
    properties["explain"] = {"type": "boolean", "default": True, "description": described("explain")}
    properties["top_k"] = {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["all"]}],
        "default": settings.default_top_k,
        "description": described("top_k"),
    }
    properties["max_reasons"] = {
        "type": "integer",
        "minimum": 0,
        "default": application_model.model_fields["max_reasons"].default,
        "description": described("max_reasons"),
    }
    opt_in = {"type": "string", "enum": ["score_as_missing"]}
    unseen_branch: dict[str, Any] = {
        "title": "unseen categories scored as missing",
        "properties": {"unseen_categories": opt_in},
    }
    if settings.unseen_categories == "reject":
        unseen_branch["required"] = ["unseen_categories"]
    document: dict[str, Any] = {
        "title": "Application",
        "type": "object",
        "description": f"One credit application ({schema.name}) for model features, plus options. " + UNSEEN_POLICY_DOC,
        "properties": properties,
        "required": [spec.name for spec in schema.features if not spec.nullable],
        "additionalProperties": False,
    }
    if known:
        document["anyOf"] = [{"title": "every category seen in training", "properties": known}, unseen_branch]
    example = application_model.example_application  # type: ignore[attr-defined]
    if example is not None:
        document["example"] = example
    return document


def _nullable(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    """OpenAPI 3.0 nullability; an `enum` must list null itself (OpenAPI 3.0.3 clarification)."""
    if not nullable:
        return schema
    out = {**schema, "nullable": True}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def to_openapi30(schema: Any) -> Any:
    """pydantic's JSON Schema (2020-12) as OpenAPI 3.0: null types -> nullable, const -> enum."""
    if isinstance(schema, list):
        return [to_openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: to_openapi30(value) for key, value in schema.items() if key != "examples"}
    if "const" in out:
        value = out.pop("const")
        out["enum"] = [value]
    branches = out.get("anyOf")
    if branches and any(branch == {"type": "null"} for branch in branches):
        rest = [branch for branch in branches if branch != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def response_components() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(m, "serialization") for m in (PredictionOut, ValidationErrorOut, ErrorOut)], ref_template=REF_TEMPLATE
    )
    return {name: to_openapi30(schema) for name, schema in top["$defs"].items()}


# BentoML's own names for the components this document replaces (its generated request and response
# models and its error models): a document without them means BentoML's generator moved.
BENTOML_COMPONENTS = (
    "PredictRequest",
    "Application",
    "predict__Output",
    "PredictionOut",
    "ExplanationOut",
    "FeatureContributionOut",
    "ReasonOut",
    "InvalidArgument",
    "NotFound",
    "InternalServerError",
)


@dataclass(frozen=True)
class OpenAPIResult:
    """The served document, and whether BentoML's document still had the parts it replaces."""

    document: dict[str, Any]
    replaced: bool


def openapi_document(
    base: dict[str, Any],
    application_model: type[BaseModel],
    schema: DatasetSchema,
    encoder: FeatureEncoder,
    settings: ServingSettings,
    route: str = "/predict",
) -> OpenAPIResult:
    """BentoML's document (infrastructure endpoints) with an accurate `POST /predict`.

    `replaced` is False when BentoML's document no longer names its `/predict` route or the
    component names removed here: the served document is still complete, but may then carry
    stale BentoML components, and the start-up log says so (serving.patches.log_patches).
    """
    base_components = base.get("components", {}).get("schemas", {})
    replaced = route in base.get("paths", {}) and "PredictRequest" in base_components
    document = {**base, "paths": dict(base.get("paths", {}))}
    components = dict(document.get("components", {}).get("schemas", {}))
    for stale in BENTOML_COMPONENTS:
        components.pop(stale, None)
    components.update(response_components())
    components["Application"] = application_openapi_schema(application_model, schema, encoder, settings)
    limit = settings.max_applications_per_request
    components["PredictRequest"] = {
        "title": "PredictRequest",
        "type": "object",
        "additionalProperties": False,
        "required": ["applications"],
        "properties": {
            "applications": {
                "description": f"One application object, or a list of 1 to {limit} of them.",
                "anyOf": [
                    {"$ref": REF_TEMPLATE.format(model="Application")},
                    {
                        "type": "array",
                        "items": {"$ref": REF_TEMPLATE.format(model="Application")},
                        "minItems": 1,
                        "maxItems": limit,
                    },
                ],
            }
        },
    }
    document["components"] = {**document.get("components", {}), "schemas": components}
    old = document["paths"].get(route, {}).get("post", {})

    def answer(description: str, component: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=component)}}},
        }

    document["paths"][route] = {
        "post": {
            "tags": old.get("tags", ["Service APIs"]),
            "operationId": old.get("operationId", "predict"),
            "x-bentoml-name": old.get("x-bentoml-name", "predict"),
            "description": (
                f"Score one application or a list of up to {limit}: a calibrated PD, its master-scale grade, its principal reasons "
                "and (unless `explain` is false) an exact SHAP explanation each, "
                f"in request order. Bodies over {settings.max_request_bytes} bytes get a 413 before they are read; "
                "Content-Type must be application/json (415 otherwise). " + UNSEEN_POLICY_DOC
            ),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="PredictRequest")}}},
            },
            "responses": {
                "200": {
                    "description": "One answer per application, in request order.",
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": {"$ref": REF_TEMPLATE.format(model="PredictionOut")}}
                        }
                    },
                },
                "400": answer("Invalid request: `detail[].loc` names the list index and field.", "ValidationErrorOut"),
                "413": answer(f"Body larger than {settings.max_request_bytes} bytes.", "ErrorOut"),
                "415": answer("Content-Type is not application/json.", "ErrorOut"),
                "500": answer("Unexpected server error.", "ErrorOut"),
                "503": answer("Overloaded: retry after the Retry-After header's seconds.", "ErrorOut"),
            },
        }
    }
    return OpenAPIResult(document, replaced)
