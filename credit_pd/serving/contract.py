"""The request and response contract of `POST /predict`, built from the STORED model.

The model store entry carries the schema (types, bounds, nullability, descriptions, example),
the category vocabularies and the numeric training ranges; this module turns them into the
pydantic request model that validates every request (and `credit_pd.serving.openapi` into the
OpenAPI document that describes it, from the same `CategoryRule`s, feature specs and field
descriptions), plus the response models.

All validation happens per client request, before BentoML's adaptive batcher merges requests:
a bad application is rejected with a 400 naming its list index and field, and can never fail a
merged batch that holds other clients' applications.

Categories: a categorical whose training labels are all numeric codes (status 1, 2, 3) accepts
JSON numbers and decimal strings, and `1`, `1.0`, `"1"` and `"1.0"` are the same category
(`credit_pd.categories.canonical_category`). Unseen values follow a policy (`unseen_categories`):
`reject` (400 naming the field and the allowed values) or `score_as_missing` (200, scored as
missing with a warning); the deployment sets the default, each application may override it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import bentoml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    create_model,
)
from pydantic_core import PydanticCustomError

from credit_pd.categories import UNSEEN_POLICIES, CategoryRule, UnseenPolicy, canonical_category, category_rules
from credit_pd.explanation import DEFAULT_MAX_REASONS, REASON_LIMITS, REASON_MEANING
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema, FeatureSpec, FeatureType
from credit_pd.serving.middleware import NOT_PARSED, PARSED_BODY_KEY
from credit_pd.serving.records import current_request_id
from credit_pd.serving.settings import ServingSettings

# Request fields that are options, not features; a schema must not use these names.
OPTION_FIELDS = ("unseen_categories", "uuid", "explain", "top_k", "max_reasons")
UUID_MAX_LENGTH = 128
# Where an application keeps its request's id (`ApplicationBase`): never a field, so never a feature.
REQUEST_ID_KEY = "request_id"
# Longest category label accepted (the longest training label is ~40 characters); bounds the
# size of a request that `score_as_missing` lets through.
CATEGORY_MAX_LENGTH = 200
# JSON allows numbers no float can hold (1e400, 10**400); documenting the float range makes the
# OpenAPI document say what the server does: reject them with a 400.
FLOAT_MAX = sys.float_info.max
UNSEEN_POLICY_DOC = (
    "What to do with a category value never seen in training: `reject` (400 naming the field and "
    "the allowed values) or `score_as_missing` (scored as missing, i.e. down the model's missing-value "
    'branch, and the answer carries a warning). Spellings of the same numeric code (1, 1.0, "1", '
    '"1.0") are one category and never count as unseen.'
)


# ---------------------------------------------------------------------- request model --------


def _numeric_annotation(spec: FeatureSpec) -> Any:
    low = spec.minimum if spec.minimum is not None else -FLOAT_MAX
    high = spec.maximum if spec.maximum is not None else FLOAT_MAX
    return Annotated[float, Field(strict=True, allow_inf_nan=False, ge=low, le=high)]


def _category_annotation(rule: CategoryRule, default_policy: UnseenPolicy) -> Any:
    text = Annotated[StrictStr, Field(min_length=1, max_length=CATEGORY_MAX_LENGTH)]
    base: Any = text | Annotated[float, Field(strict=True, allow_inf_nan=False)] if rule.numeric_coded else text

    accepted, validate = rule.accepted_as_is, rule.validate

    def check(value: Any, info: ValidationInfo) -> str:
        if type(value) is str and value in accepted:
            return value  # the common case, inline: one Python call per value instead of two
        return validate(value, info, default_policy)

    return Annotated[base, AfterValidator(check)]


def _feature_field(
    spec: FeatureSpec, encoder: FeatureEncoder, rules: dict[str, CategoryRule], settings: ServingSettings
) -> tuple[Any, Any]:
    if spec.type is FeatureType.NUMERIC:
        annotation: Any = _numeric_annotation(spec)
    elif spec.type is FeatureType.BOOLEAN:
        annotation = StrictBool
    else:
        annotation = _category_annotation(rules[spec.name], settings.unseen_categories)
    if spec.nullable:
        annotation = annotation | None
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
        parts.append(
            f"Training range [{low:g}, {high:g}]: values outside it are scored as the nearest seen value, with a warning."
        )
    if spec.name in rules:
        rule = rules[spec.name]
        if rule.numeric_coded:
            parts.append(
                'A numeric code: a JSON number or a decimal string (1, 1.0, "1" and "1.0" are the same category).'
            )
        parts.append(f"Values seen in training: {', '.join(rule.labels)}. Unseen values follow `unseen_categories`.")
    parts.append("null when unknown (may be omitted)." if spec.nullable else "Required, never null.")
    return " ".join(parts)


class ApplicationBase(BaseModel):
    """What every application model shares: the id of the HTTP request it came in (for its decision record).

    Validation runs in the request's own task, before the batcher merges applications of many
    requests, so this is where an application can still learn its request's id.
    """

    def model_post_init(self, context: Any, /) -> None:
        """Remember the id of the HTTP request being validated, in the instance's private slot.

        One plain call per application: a declared `PrivateAttr` set by a model validator cost
        pydantic two Python-level calls per application to set it and a `__getattr__` detour to
        read it (together ~5 us per application, 0.5 ms of a 100-application request).
        """
        object.__setattr__(self, "__pydantic_private__", {REQUEST_ID_KEY: current_request_id.get()})

    @property
    def _request_id(self) -> str | None:
        """The id of the HTTP request this application came in (None outside one)."""
        private = self.__pydantic_private__
        return None if private is None else private.get(REQUEST_ID_KEY)


def build_application_model(
    schema: DatasetSchema, encoder: FeatureEncoder, settings: ServingSettings
) -> type[BaseModel]:
    """One application: the stored model's features, plus an optional id and options.

    `unseen_categories` is declared first because pydantic validates fields in order and the
    category validators read it (`info.data`).
    """
    clashes = [name for name in OPTION_FIELDS if name in schema.feature_names]
    if clashes:
        raise ValueError(f"schema {schema.name!r} uses reserved request field name(s) {clashes}")
    rules = category_rules(encoder)
    fields: dict[str, Any] = {
        "unseen_categories": (
            Literal[UNSEEN_POLICIES],
            Field(settings.unseen_categories, description=UNSEEN_POLICY_DOC),
        ),
    }
    fields.update({spec.name: _feature_field(spec, encoder, rules, settings) for spec in schema.features})
    fields["uuid"] = (
        StrictStr | None,
        Field(None, max_length=UUID_MAX_LENGTH, description="Caller's id, echoed back; never used for scoring."),
    )
    fields["explain"] = (StrictBool, Field(True, description="Return the SHAP explanation (false is cheaper)."))
    fields["top_k"] = (
        Annotated[int, Field(strict=True, ge=1)] | Literal["all"],
        Field(
            settings.default_top_k,
            description='How many features the explanation lists, largest |contribution| first, or "all".',
        ),
    )
    fields["max_reasons"] = (
        Annotated[int, Field(strict=True, ge=0)],
        Field(
            DEFAULT_MAX_REASONS,
            description=(
                "How many principal reasons the answer lists (0: none; never more than the model's reason codes). "
                "Reasons are computed also when `explain` is false."
            ),
        ),
    )
    example = example_application(schema, rules)
    extra: dict[str, Any] = {"description": f"One credit application ({schema.name})."}
    if example is not None:
        extra["example"] = example  # OpenAPI 3.0's singular `example` (BentoML's /schema.json shows it too)
    application = create_model(
        "Application",
        __base__=ApplicationBase,
        __cls_kwargs__={"extra": "forbid", "json_schema_extra": extra},
        **fields,
    )
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
    """BentoML's request envelope, closed: an unknown top-level key is a 400, not ignored.

    It validates the document `middleware.RequestLimits` parsed when it checked the body for
    duplicate keys, instead of letting BentoML parse the same body again (`from_http_request`).
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> Any:
        """The request model of the parsed document; BentoML's own parse when there is none.

        Python-mode validation of jiter's values accepts exactly what JSON-mode validation of the
        body accepts (same types, same strict fields: tests/serving/test_contract.py compares the
        two on every kind of value), at about half the cost. A rejected document is validated
        again from the body, so every 400 keeps the JSON wording ("a valid array", not "a valid
        list"). Only API routes of RequestLimits carry a document, and only with Content-Type
        `application/json`, the serde BentoML then picks.
        """
        document = request.scope.get(PARSED_BODY_KEY, NOT_PARSED)
        if document is NOT_PARSED:
            return await super().from_http_request(request, serde)
        try:
            return cls.model_validate(document)
        except ValidationError:
            return cls.model_validate_json(await request.body())


def build_input_spec(applications_type: Any) -> type[bentoml.IODescriptor]:
    """`{"applications": ...}` and nothing else: the `input_spec` of `POST /predict`."""
    return create_model(
        "PredictRequest",
        __base__=StrictInput,
        applications=(applications_type, Field(description="One application object, or a list of them.")),
    )


def build_request_model(schema: DatasetSchema, encoder: FeatureEncoder, settings: ServingSettings) -> type[BaseModel]:
    """The whole request model of `POST /predict` in one call, for callers that need none of its parts
    (service.py keeps the application model and list type too: BentoML and the OpenAPI document use them)."""
    return build_input_spec(application_list_type(build_application_model(schema, encoder, settings), settings))


# ---------------------------------------------------------------------- responses ----------


class FeatureContributionOut(BaseModel):
    feature: str
    value: StrictBool | float | str | None = Field(
        description="The input value (categories in canonical spelling; null = missing)."
    )
    contribution: float = Field(description="SHAP contribution to the log-odds.")


class ExplanationOut(BaseModel):
    unit: Literal["log-odds"] = "log-odds"
    base_value: float = Field(description="Expected log-odds of the booster over the training data.")
    raw_score: float = Field(description="base_value + sum of all contributions: the model's log-odds for this row.")
    contributions: list[FeatureContributionOut]


class ReasonOut(BaseModel):
    code: str = Field(description="The reason code (stored with the model; several features may share one).")
    text: str = Field(description="What the customer can be told, from the stored model's reason codes.")
    contribution: float = Field(
        description="The code's features' summed SHAP contributions to the log-odds; always > 0."
    )
    features: list[str] = Field(description="The features behind the code.")


class PredictionOut(BaseModel):
    uuid: str | None
    pd: float = Field(description="Calibrated probability of default.")
    grade: str = Field(
        description="Master-scale grade of the PD (fixed PD bands stored with the model, listed from the lowest PD band up "
        "in the model card)."
    )
    reasons: list[ReasonOut] = Field(
        description=f"Principal reasons, largest first, at most `max_reasons`. {REASON_MEANING} {REASON_LIMITS}"
    )
    model_tag: str
    explanation: ExplanationOut | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="Unseen category scored as missing (only under `score_as_missing`); value outside the training range.",
    )


class ErrorDetailOut(BaseModel):
    type: str = Field(description="pydantic error type, e.g. greater_than_equal, unseen_category, extra_forbidden.")
    loc: list[str | int] = Field(description='Where: e.g. ["applications", 1, "age"] (the list index, then the field).')
    msg: str


class ValidationErrorOut(BaseModel):
    error: str
    detail: list[ErrorDetailOut]


class ErrorOut(BaseModel):
    error: str
