"""The request and response contract of `POST /predict`, built from the STORED model.

The model store entry carries the schema (types, bounds, nullability, descriptions, example),
the category vocabularies and the numeric training ranges; this module turns them into the
pydantic request model that validates every request, and into the OpenAPI document that
describes it. Both are built from the same `CategoryRule`s and feature specs, and the
schemathesis test (tests/serving/test_service.py) checks that they agree.

All validation happens per client request, before BentoML's adaptive batcher merges requests:
a bad application is rejected with a 400 naming its list index and field, and can never fail a
merged batch that holds other clients' applications.

Categories: a categorical whose training labels are all numeric codes (status 1, 2, 3) accepts
JSON numbers and decimal strings, and `1`, `1.0`, `"1"` and `"1.0"` are the same category
(`credit_pd.features.canonical_category`). Unseen values follow a policy (`unseen_categories`):
`reject` (400 naming the field and the allowed values) or `score_as_missing` (200, scored as
missing with a warning); the deployment sets the default, each application may override it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal, Optional, Union

import bentoml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    create_model,
)
from pydantic_core import PydanticCustomError

from credit_pd.features import FeatureEncoder, canonical_category
from credit_pd.schema import DatasetSchema, FeatureSpec, FeatureType
from credit_pd.scoring_model import ScoringModel
from credit_pd.serving.settings import UNSEEN_POLICIES, ServingSettings, UnseenPolicy

# Request fields that are options, not features; a schema must not use these names.
OPTION_FIELDS = ("unseen_categories", "uuid", "explain", "top_k")
UUID_MAX_LENGTH = 128
# Longest category label accepted (the longest training label is ~40 characters); bounds the
# size of a request that `score_as_missing` lets through.
CATEGORY_MAX_LENGTH = 200
# JSON allows numbers no float can hold (1e400, 10**400); documenting the float range makes the
# OpenAPI document say what the server does: reject them with a 400.
FLOAT_MAX = sys.float_info.max
# How a numeric code may be spelled as a string: plain decimal, no sign on zero, no leading
# zeros, no exponent ("1", "1.0", "-2", "2.50"; not "01", "+1", "1e0", "-0").
CODE_SPELLING = r"(0|-?[1-9][0-9]*)(\.[0-9]+)?|-0\.[0-9]*[1-9][0-9]*"
UNSEEN_POLICY_DOC = (
    "What to do with a category value never seen in training: `reject` (400 naming the field and "
    "the allowed values) or `score_as_missing` (scored as missing, i.e. down the model's missing-value "
    "branch, and the answer carries a warning). Spellings of the same numeric code (1, 1.0, \"1\", "
    "\"1.0\") are one category and never count as unseen."
)


@dataclass(frozen=True)
class CategoryRule:
    """What one categorical field accepts: its training labels, spellings and the unseen policy."""

    name: str
    labels: tuple[str, ...]
    numeric_coded: bool

    @cached_property
    def label_set(self) -> frozenset[str]:
        return frozenset(self.labels)

    @cached_property
    def text_labels(self) -> tuple[str, ...]:
        """Labels matched as exact strings (not numeric codes)."""
        return tuple(label for label in self.labels if not re.fullmatch(CODE_SPELLING, label))

    @cached_property
    def code_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if re.fullmatch(CODE_SPELLING, label))

    @cached_property
    def known_code_pattern(self) -> str | None:
        """A regex matching exactly the decimal spellings of the known codes ("1", "1.0", "1.00")."""
        if not self.code_labels:
            return None
        parts = [re.escape(c) + ("0*" if "." in c else r"(\.0+)?") for c in self.code_labels]
        return "(" + "|".join(parts) + ")"

    def is_known(self, value: str | float) -> bool:
        if isinstance(value, str):
            if value in self.text_labels:
                return True
            return self.known_code_pattern is not None and re.fullmatch(self.known_code_pattern, value) is not None
        return canonical_category(value) in self.label_set

    def allowed_text(self) -> str:
        shown = ", ".join(repr(label) for label in self.labels[:20])
        more = f" and {len(self.labels) - 20} more (see the OpenAPI document)" if len(self.labels) > 20 else ""
        return shown + more

    @cached_property
    def accepted_as_is(self) -> frozenset[str]:
        """Labels that `validate` returns unchanged under any policy: known, well spelled, canonical."""
        return frozenset(
            label for label in self.labels
            if (not self.numeric_coded or re.fullmatch(CODE_SPELLING, label)) and canonical_category(label) == label
        )

    def validate(self, value: str | float, info: ValidationInfo, default_policy: UnseenPolicy) -> str:
        """The canonical label; raises for a malformed code and, under `reject`, an unseen value."""
        if type(value) is str and value in self.accepted_as_is:
            return value  # the common case, one set look-up (the checks below cost ~40 us per application)
        if self.numeric_coded and isinstance(value, str) and not re.fullmatch(CODE_SPELLING, value):
            raise PydanticCustomError(
                "category_code_spelling",
                "Input should be a numeric code: a JSON number or a decimal string such as \"1\" or \"1.0\"",
            )
        policy = info.data.get("unseen_categories", default_policy)
        if policy == "reject" and not self.is_known(value):
            raise PydanticCustomError(
                "unseen_category",
                "Input should be a value seen in training: {allowed}. Send \"unseen_categories\": "
                "\"score_as_missing\" to score an unseen value as missing instead",
                {"allowed": self.allowed_text()},
            )
        label = canonical_category(value)
        assert label is not None  # empty strings and NaN are rejected by the field types
        return label

    # ------------------------------------------------------------------ OpenAPI ------------
    def permissive_schema(self) -> dict[str, Any]:
        """Any well-formed value (what `score_as_missing` accepts)."""
        text: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": CATEGORY_MAX_LENGTH}
        if not self.numeric_coded:
            return text
        return {"anyOf": [
            {"type": "string", "pattern": f"^({CODE_SPELLING})$"},
            {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX},
        ]}

    def known_schema(self) -> dict[str, Any]:
        """Only the values seen in training (what `reject` accepts), listed."""
        branches: list[dict[str, Any]] = []
        if self.text_labels:
            branches.append({"type": "string", "enum": list(self.text_labels)})
        if self.known_code_pattern is not None:
            branches.append({"type": "string", "pattern": f"^{self.known_code_pattern}$"})
            if self.numeric_coded:
                branches.append({"type": "number", "enum": [_as_number(c) for c in self.code_labels]})
        if not branches:  # a column that was all missing in training: nothing is known
            return {"type": "string", "enum": [], "description": "no value was seen in training"}
        return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _as_number(code: str) -> int | float:
    number = float(code)
    return int(number) if number.is_integer() else number


def category_rules(encoder: FeatureEncoder) -> dict[str, CategoryRule]:
    return {
        name: CategoryRule(name=name, labels=tuple(labels), numeric_coded=encoder.numeric_coded(name))
        for name, labels in encoder.categorical.items()
    }


# ---------------------------------------------------------------------- request model --------

def _numeric_annotation(spec: FeatureSpec) -> Any:
    low = spec.minimum if spec.minimum is not None else -FLOAT_MAX
    high = spec.maximum if spec.maximum is not None else FLOAT_MAX
    return Annotated[float, Field(strict=True, allow_inf_nan=False, ge=low, le=high)]


def _category_annotation(rule: CategoryRule, default_policy: UnseenPolicy) -> Any:
    text = Annotated[StrictStr, Field(min_length=1, max_length=CATEGORY_MAX_LENGTH)]
    base: Any = Union[text, Annotated[float, Field(strict=True, allow_inf_nan=False)]] if rule.numeric_coded else text

    def check(value: Any, info: ValidationInfo) -> str:
        return rule.validate(value, info, default_policy)

    return Annotated[base, AfterValidator(check)]


def _feature_field(spec: FeatureSpec, encoder: FeatureEncoder, rules: dict[str, CategoryRule], settings: ServingSettings) -> tuple[Any, Any]:
    if spec.type is FeatureType.NUMERIC:
        annotation: Any = _numeric_annotation(spec)
    elif spec.type is FeatureType.BOOLEAN:
        annotation = StrictBool
    else:
        annotation = _category_annotation(rules[spec.name], settings.unseen_categories)
    if spec.nullable:
        annotation = Optional[annotation]
    default = None if spec.nullable else ...
    return annotation, Field(default, description=feature_description(spec, encoder, rules))


def feature_description(spec: FeatureSpec, encoder: FeatureEncoder, rules: dict[str, CategoryRule]) -> str:
    """What the OpenAPI document says about one feature: meaning, type, bounds, training range."""
    parts = [f"{spec.description} ({spec.type.value})." if spec.description else f"({spec.type.value})."]
    if spec.minimum is not None:
        parts.append(f"Minimum {spec.minimum:g}.")
    if spec.maximum is not None:
        parts.append(f"Maximum {spec.maximum:g}.")
    if spec.name in encoder.numeric_ranges:
        low, high = encoder.numeric_ranges[spec.name]
        parts.append(f"Training range [{low:g}, {high:g}]: values outside it are scored as the nearest seen value, with a warning.")
    if spec.name in rules:
        rule = rules[spec.name]
        if rule.numeric_coded:
            parts.append("A numeric code: a JSON number or a decimal string (1, 1.0, \"1\" and \"1.0\" are the same category).")
        parts.append(f"Values seen in training: {', '.join(rule.labels)}. Unseen values follow `unseen_categories`.")
    parts.append("null when unknown (may be omitted)." if spec.nullable else "Required, never null.")
    return " ".join(parts)


def build_application_model(model: ScoringModel, settings: ServingSettings) -> type[BaseModel]:
    """One application: the stored model's features, plus an optional id and options.

    `unseen_categories` is declared first because pydantic validates fields in order and the
    category validators read it (`info.data`).
    """
    schema, encoder = model.schema, model.encoder
    clashes = [name for name in OPTION_FIELDS if name in schema.feature_names]
    if clashes:
        raise ValueError(f"schema {schema.name!r} uses reserved request field name(s) {clashes}")
    rules = category_rules(encoder)
    fields: dict[str, Any] = {
        "unseen_categories": (Literal[UNSEEN_POLICIES], Field(settings.unseen_categories, description=UNSEEN_POLICY_DOC)),
    }
    fields.update({spec.name: _feature_field(spec, encoder, rules, settings) for spec in schema.features})
    fields["uuid"] = (Optional[StrictStr], Field(None, max_length=UUID_MAX_LENGTH, description="Caller's id, echoed back; never used for scoring."))
    fields["explain"] = (StrictBool, Field(True, description="Return the SHAP explanation (false is cheaper)."))
    fields["top_k"] = (
        Union[Annotated[int, Field(strict=True, ge=1)], Literal["all"]],
        Field(settings.default_top_k, description='How many features the explanation lists, largest |contribution| first, or "all".'),
    )
    example = example_application(schema, rules)
    extra: dict[str, Any] = {"description": f"One credit application ({schema.name})."}
    if example is not None:
        extra["example"] = example  # OpenAPI 3.0's singular `example` (BentoML's /schema.json shows it too)
    application = create_model("Application", __config__=ConfigDict(extra="forbid", json_schema_extra=extra), **fields)
    application.category_rules = rules  # type: ignore[attr-defined]
    application.example_application = example  # type: ignore[attr-defined]
    return application


def example_application(schema: DatasetSchema, rules: dict[str, CategoryRule]) -> dict[str, Any] | None:
    """The stored model's example, categories in canonical spelling, as the OpenAPI example."""
    if schema.example is None:
        return None
    example = {name: canonical_category(value) if name in rules else value for name, value in schema.example.items()}
    return {**example, "uuid": "example-1"}


def application_list_type(application_model: type[BaseModel], settings: ServingSettings) -> Any:
    """The batchable argument's type: 1..max applications, or one bare object.

    The count is checked before any application is validated, so an oversized list costs one
    `len()` rather than validating a thousand applications only to reject them all.
    """
    limit = settings.max_applications_per_request

    def as_bounded_list(value: Any) -> Any:
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_long",
                "List should have at most {max_length} items, not {actual_length}; split the request",
                {"max_length": limit, "actual_length": len(value)},
            )
        return value

    return Annotated[
        list[application_model],  # type: ignore[valid-type]
        BeforeValidator(as_bounded_list),
        Field(min_length=1, max_length=limit, description="One application object, or a list of them."),
    ]


class StrictInput(bentoml.IODescriptor):
    """BentoML's request envelope, closed: an unknown top-level key is a 400, not ignored."""

    model_config = ConfigDict(extra="forbid")


def build_input_spec(applications_type: Any) -> type[bentoml.IODescriptor]:
    """`{"applications": ...}` and nothing else: the `input_spec` of `POST /predict`."""
    return create_model(
        "PredictRequest",
        __base__=StrictInput,
        applications=(applications_type, Field(description="One application object, or a list of them.")),
    )


# ---------------------------------------------------------------------- responses ----------

class FeatureContributionOut(BaseModel):
    feature: str
    value: Union[StrictBool, float, str, None] = Field(
        description="The input value (categories in canonical spelling; null = missing)."
    )
    contribution: float = Field(description="SHAP contribution to the log-odds.")


class ExplanationOut(BaseModel):
    unit: Literal["log-odds"] = "log-odds"
    base_value: float = Field(description="Expected log-odds of the booster over the training data.")
    raw_score: float = Field(description="base_value + sum of all contributions: the model's log-odds for this row.")
    contributions: list[FeatureContributionOut]


class PredictionOut(BaseModel):
    uuid: Optional[str]
    pd: float = Field(description="Calibrated probability of default.")
    model_tag: str
    explanation: Optional[ExplanationOut] = None
    warnings: list[str] = Field(
        default_factory=list,
        description="Unseen category scored as missing (only under `score_as_missing`); value outside the training range.",
    )


class ErrorDetailOut(BaseModel):
    type: str = Field(description="pydantic error type, e.g. greater_than_equal, unseen_category, extra_forbidden.")
    loc: list[Union[str, int]] = Field(description='Where: e.g. ["applications", 1, "age"] (the list index, then the field).')
    msg: str


class ValidationErrorOut(BaseModel):
    error: str
    detail: list[ErrorDetailOut]


class ErrorOut(BaseModel):
    error: str


# ---------------------------------------------------------------------- OpenAPI ------------

REF_TEMPLATE = "#/components/schemas/{model}"


def application_openapi_schema(application_model: type[BaseModel], model: ScoringModel, settings: ServingSettings) -> dict[str, Any]:
    """The Application component, written from the same rules the request model validates with.

    OpenAPI 3.0: `nullable` rather than a null type, `enum` rather than `const`. Categories are
    permissive in `properties` and listed in the first `anyOf` branch: an application is valid
    when every category was seen in training, or when it asks for `score_as_missing` (or the
    deployment's default is `score_as_missing` and it does not ask for `reject`).
    """
    rules: dict[str, CategoryRule] = application_model.category_rules  # type: ignore[attr-defined]
    schema, encoder = model.schema, model.encoder
    properties: dict[str, Any] = {
        "unseen_categories": {"type": "string", "enum": list(UNSEEN_POLICIES), "default": settings.unseen_categories,
                              "description": UNSEEN_POLICY_DOC},
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
            prop = rules[spec.name].permissive_schema()
            known[spec.name] = _nullable(rules[spec.name].known_schema(), spec.nullable)
        properties[spec.name] = {**_nullable(prop, spec.nullable), "description": feature_description(spec, encoder, rules)}
    properties["uuid"] = {"type": "string", "maxLength": UUID_MAX_LENGTH, "nullable": True,
                          "description": "Caller's id, echoed back; never used for scoring."}
    properties["explain"] = {"type": "boolean", "default": True, "description": "Return the SHAP explanation (false is cheaper)."}
    properties["top_k"] = {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["all"]}],
        "default": settings.default_top_k,
        "description": 'How many features the explanation lists, largest |contribution| first, or "all".',
    }
    opt_in = {"type": "string", "enum": ["score_as_missing"]}
    unseen_branch: dict[str, Any] = {"title": "unseen categories scored as missing", "properties": {"unseen_categories": opt_in}}
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


def openapi_document(base: dict[str, Any], application_model: type[BaseModel], model: ScoringModel,
                     settings: ServingSettings, route: str = "/predict") -> dict[str, Any]:
    """BentoML's document (infrastructure endpoints) with an accurate `POST /predict`."""
    document = {**base, "paths": dict(base.get("paths", {}))}
    components = dict(document.get("components", {}).get("schemas", {}))
    for stale in ("PredictRequest", "Application", "predict__Output", "PredictionOut", "ExplanationOut",
                  "FeatureContributionOut", "InvalidArgument", "NotFound", "InternalServerError"):
        components.pop(stale, None)
    components.update(response_components())
    components["Application"] = application_openapi_schema(application_model, model, settings)
    limit = settings.max_applications_per_request
    components["PredictRequest"] = {
        "title": "PredictRequest",
        "type": "object",
        "additionalProperties": False,
        "required": ["applications"],
        "properties": {"applications": {
            "description": f"One application object, or a list of 1 to {limit} of them.",
            "anyOf": [
                {"$ref": REF_TEMPLATE.format(model="Application")},
                {"type": "array", "items": {"$ref": REF_TEMPLATE.format(model="Application")}, "minItems": 1, "maxItems": limit},
            ],
        }},
    }
    document["components"] = {**document.get("components", {}), "schemas": components}
    old = document["paths"].get(route, {}).get("post", {})

    def answer(description: str, component: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=component)}}}}

    document["paths"][route] = {"post": {
        "tags": old.get("tags", ["Service APIs"]),
        "operationId": old.get("operationId", "predict"),
        "x-bentoml-name": old.get("x-bentoml-name", "predict"),
        "description": (
            f"Score one application or a list of up to {limit}: a calibrated PD and an exact SHAP explanation each, "
            f"in request order. Bodies over {settings.max_request_bytes} bytes get a 413 before they are read; "
            "Content-Type must be application/json (415 otherwise). " + UNSEEN_POLICY_DOC
        ),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="PredictRequest")}}}},
        "responses": {
            "200": {"description": "One answer per application, in request order.", "content": {"application/json": {
                "schema": {"type": "array", "items": {"$ref": REF_TEMPLATE.format(model="PredictionOut")}}}}},
            "400": answer("Invalid request: `detail[].loc` names the list index and field.", "ValidationErrorOut"),
            "413": answer(f"Body larger than {settings.max_request_bytes} bytes.", "ErrorOut"),
            "415": answer("Content-Type is not application/json.", "ErrorOut"),
            "500": answer("Unexpected server error.", "ErrorOut"),
            "503": answer("Overloaded: retry after the Retry-After header's seconds.", "ErrorOut"),
        },
    }}
    return document
