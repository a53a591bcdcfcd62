"""The request and response contract of `POST /predict`, built from the schema the model carries.

All validation happens in the pydantic request model, per client request, before BentoML's
adaptive batcher merges requests: a bad application is rejected with a 400 naming its list index
and field, and can never fail a merged batch that holds other clients' applications.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, create_model

from credit_pd.schema import DatasetSchema, FeatureSpec, FeatureType
from credit_pd.serving.settings import ServingSettings

# Request fields that are options, not features; a schema must not use these names.
OPTION_FIELDS = ("uuid", "explain", "top_k")
UUID_MAX_LENGTH = 128


def _feature_annotation(spec: FeatureSpec) -> Any:
    """Strict types: a string where a number is expected is an error, not a silent cast."""
    if spec.type is FeatureType.NUMERIC:
        base: Any = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=spec.minimum, le=spec.maximum)]
    elif spec.type is FeatureType.BOOLEAN:
        base = StrictBool
    else:
        base = Annotated[StrictStr, Field(min_length=1)]
    return Optional[base] if spec.nullable else base


def _feature_field(spec: FeatureSpec) -> tuple[Any, Any]:
    annotation = _feature_annotation(spec)
    bounds = "".join(
        part for part in (
            f" Minimum {spec.minimum:g}." if spec.minimum is not None else "",
            f" Maximum {spec.maximum:g}." if spec.maximum is not None else "",
        )
    )
    missing = " null when unknown (may be omitted)." if spec.nullable else " Required, never null."
    description = f"{spec.description} ({spec.type.value}).{bounds}{missing}"
    default = None if spec.nullable else ...
    return annotation, Field(default, description=description)


def build_application_model(schema: DatasetSchema, settings: ServingSettings) -> type[BaseModel]:
    """One application: the schema's features, plus an optional id and explanation options."""
    clashes = [name for name in OPTION_FIELDS if name in schema.feature_names]
    if clashes:
        raise ValueError(f"schema {schema.name!r} uses reserved request field name(s) {clashes}")
    fields: dict[str, Any] = {spec.name: _feature_field(spec) for spec in schema.features}
    fields["uuid"] = (Optional[StrictStr], Field(None, max_length=UUID_MAX_LENGTH, description="Caller's id, echoed back; never used for scoring."))
    fields["explain"] = (StrictBool, Field(True, description="Return the SHAP explanation (false is cheaper)."))
    fields["top_k"] = (
        Union[Annotated[int, Field(strict=True, ge=1)], Literal["all"]],
        Field(settings.default_top_k, description='How many features the explanation lists, largest |contribution| first, or "all".'),
    )
    return create_model(
        "Application",
        __config__=ConfigDict(extra="forbid", json_schema_extra=_application_schema_extra(schema)),
        **fields,
    )


def _application_schema_extra(schema: DatasetSchema) -> dict[str, Any]:
    extra: dict[str, Any] = {"description": f"One credit application ({schema.name})."}
    if schema.example is not None:
        # OpenAPI 3.0's singular `example`: BentoML's OpenAPI model rejects JSON Schema `examples`.
        extra["example"] = {**schema.example, "uuid": "example-1"}
    return extra


def _as_list(value: Any) -> Any:
    """A single application object is accepted where a list is expected."""
    return [value] if isinstance(value, dict) else value


def application_list_type(application_model: type[BaseModel], settings: ServingSettings) -> Any:
    """The batchable argument's type: 1..max applications, or one bare object."""
    return Annotated[
        list[application_model],  # type: ignore[valid-type]
        BeforeValidator(_as_list),
        Field(min_length=1, max_length=settings.max_applications_per_request,
              description="One application object, or a list of them."),
    ]


class FeatureContributionOut(BaseModel):
    feature: str
    value: Union[StrictBool, float, str, None] = Field(description="The input value as received (null = missing).")
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
    warnings: list[str] = Field(default_factory=list)


