"""Serving glue: request/response schemas built from the column schema, and batch scoring.

All validation happens in the pydantic request model, per client request, before BentoML's
adaptive batcher merges requests: a bad application is rejected with a 400 naming its list index
and field, and can never fail a merged batch that holds other clients' applications.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, create_model

from credit_pd.config import ServingSettings
from credit_pd.explanation import rank_contributions
from credit_pd.schema import DatasetSchema, FeatureSpec, FeatureType
from credit_pd.scoring_model import ScoringModel

if TYPE_CHECKING:
    import pandas as pd

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


class PDScorer:
    """Scores a merged batch: one vectorised LightGBM + TreeSHAP call for all rows that ask."""

    def __init__(self, model: ScoringModel, model_tag: str) -> None:
        self.model = model
        self.model_tag = model_tag
        self.feature_names = list(model.feature_names)

    def score(self, applications: Sequence[BaseModel]) -> list[PredictionOut]:
        records = [app.model_dump(include=set(self.feature_names)) for app in applications]
        matrix = self.model.encoder.encode_records(records)
        explained = np.array([app.explain for app in applications], dtype=bool)
        raw = np.empty(len(records))
        contributions = base = None
        if explained.any():
            explanation = self.model.explain(matrix[explained])
            raw[explained] = explanation.raw_score
            contributions, base = explanation.contributions, explanation.base_value
        if (~explained).any():
            raw[~explained] = self.model.raw_score(matrix[~explained])
        pds = self.model.calibrator.apply(raw)
        explained_rank = np.cumsum(explained) - 1
        # model_construct: every value below is produced here with the declared type, so
        # re-validating ~12 response objects per row would only cost latency in the hot path.
        return [
            PredictionOut.model_construct(
                uuid=app.uuid,
                pd=float(pds[i]),
                model_tag=self.model_tag,
                explanation=self._explanation(app, records[i], contributions[explained_rank[i]], base[explained_rank[i]], raw[i])
                if explained[i] else None,
                warnings=self._warnings(records[i]),
            )
            for i, app in enumerate(applications)
        ]

    def _explanation(self, app: BaseModel, record: dict, contributions: np.ndarray, base: float, raw: float) -> ExplanationOut:
        top_k = None if app.top_k == "all" else app.top_k
        ranked = rank_contributions(contributions, self.feature_names, record, top_k)
        return ExplanationOut.model_construct(
            base_value=float(base),
            raw_score=float(raw),
            contributions=[FeatureContributionOut.model_construct(feature=c.feature, value=c.value, contribution=c.contribution) for c in ranked],
        )

    def _warnings(self, record: dict) -> list[str]:
        encoder = self.model.encoder
        unseen = [
            f"{name}: value {value!r} was not seen in training; scored as missing"
            for name, value in encoder.unseen_categories(record).items()
        ]
        outside = [
            f"{name}: value {record[name]!r} is outside the training range [{low:g}, {high:g}]; scored as the nearest seen value"
            for name, (low, high) in encoder.out_of_training_range(record).items()
        ]
        return unseen + outside


class RetryAfterOn503:
    """ASGI middleware: a 503 from load shedding tells clients when to retry.

    BentoML's batcher sheds requests whose predicted wait exceeds `max_latency_ms` with a bare
    503; well-behaved clients (and load balancers) back off properly only with Retry-After.
    """

    def __init__(self, app: Any, retry_after_s: int = 1) -> None:
        self.app = app
        self.header = (b"retry-after", str(retry_after_s).encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"retry-after"]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


def cap_batcher_hold_time(max_hold_ms: float) -> bool:
    """Stop BentoML's adaptive batcher from holding requests longer than `max_hold_ms` on purpose.

    The batcher (bentoml 1.4 `CorkDispatcher`) holds a lone request for about the mean wait it
    observed over its last 50 batches. Under overload those waits are queueing time (hundreds of
    ms), so after a burst it kept holding single requests ~300 ms for minutes (measured by the
    load benchmark). Capping the learned hold leaves queueing and load shedding as they are and
    only bounds the deliberate wait. Returns False (and changes nothing) if BentoML's internals
    moved, so an upgrade degrades to stock behaviour rather than failing.
    """
    try:
        from bentoml._internal.marshal.dispatcher import Optimizer
    except ImportError:
        return False
    refresh = getattr(Optimizer, "trigger_refresh", None)
    if refresh is None or getattr(refresh, "capped_hold_s", None) is not None:
        return refresh is not None
    cap_s = max_hold_ms / 1000.0

    def trigger_refresh_capped(self: Any) -> None:
        refresh(self)
        self.wait = min(self.wait, cap_s)

    trigger_refresh_capped.capped_hold_s = cap_s  # type: ignore[attr-defined]
    Optimizer.trigger_refresh = trigger_refresh_capped
    return True


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (BentoML, LightGBM, pandas, the model) out of GC scans.

    Each scored row allocates a dozen response objects, so the collector runs often; a full
    collection then walked the whole start-up heap and stalled a request by tens of ms (the
    load benchmark's p95 of 100-application requests). Objects created later are still collected.
    """
    gc.collect()
    gc.freeze()


def requests_from_frame(frame: "pd.DataFrame", schema: DatasetSchema) -> list[dict[str, Any]]:
    """Loaded dataset rows as `/predict` application objects (JSON-ready: None for missing).

    Used by the example client, the load benchmark and the tests, so all of them send exactly
    what a client holding the dataset file would send.
    """
    records = []
    booleans = set(schema.names_of(FeatureType.BOOLEAN))
    for row in frame[[schema.id_column, *schema.feature_names]].itertuples(index=False, name=None):
        record: dict[str, Any] = {"uuid": str(row[0])}
        for name, value in zip(schema.feature_names, row[1:]):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                record[name] = None
            elif name in booleans:
                record[name] = bool(value)
            else:
                record[name] = value if isinstance(value, str) else float(value)
        records.append(record)
    return records
