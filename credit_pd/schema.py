"""The dataset's column schema, read from one YAML file.

Every other module learns the column names, types and domain bounds from a `DatasetSchema`
so that a different credit dataset can be trained by pointing at a different schema file.
"""

from __future__ import annotations

from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from credit_pd.errors import SchemaError
from credit_pd.files import read_yaml
from credit_pd.master_scale import DEFAULT_MASTER_SCALE, MasterScale

DEFAULT_SCHEMA_PATH = Path(__file__).parent / "schemas" / "klarna.yaml"


class FeatureType(str, Enum):
    """How a feature column is parsed and fed to the model."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class Monotone(str, Enum):
    """Direction the PD must move when a numeric feature grows (credit policy, not data)."""

    INCREASING = "increasing"
    DECREASING = "decreasing"


class FeatureSpec(BaseModel):
    """One feature column: its type, optional domain bounds and a human description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: FeatureType
    description: str = ""
    # False: a missing value is a data error rather than information.
    nullable: bool = True
    minimum: float | None = None
    maximum: float | None = None
    # Enforced by the model: e.g. more debt-collection history must never lower the PD.
    monotone: Monotone | None = None
    # The reason code (a key of the schema's `reason_codes`) this feature's contribution counts
    # towards when the PD is explained to the customer; several features may share one.
    reason_code: str | None = None
    # Never named as a principal reason (e.g. age, Regulation B): its contribution still counts in the PD.
    never_a_reason: bool = False

    @model_validator(mode="after")
    def _bounds_only_for_numeric(self) -> FeatureSpec:
        numeric_only = self.minimum is not None or self.maximum is not None or self.monotone is not None
        if numeric_only and self.type is not FeatureType.NUMERIC:
            raise ValueError(f"feature {self.name!r}: minimum/maximum/monotone apply to numeric features only")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum {self.minimum} > maximum {self.maximum}")
        if self.never_a_reason and self.reason_code is not None:
            raise ValueError(
                f"feature {self.name!r}: a feature with never_a_reason: true names no reason_code "
                f"(got {self.reason_code!r})"
            )
        return self


class DatasetSchema(BaseModel):
    """The whole file layout: id, target, features, separator and missing-value marker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    id_column: str
    target_column: str
    separator: str = ";"
    missing_marker: str = "NA"
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    # One application with every feature (null = missing): shown in the service's OpenAPI document.
    example: dict[str, Any] | None = None
    # Reason codes a customer can be told: {CODE: customer-readable text}. The rule:
    #   given   every feature names one of them (`reason_code`) or is `never_a_reason: true`, and
    #           every code is named by at least one feature;
    #   absent  no feature names a code; each feature that is not `never_a_reason` is its own code
    #           (the code is the feature name, the text its description).
    # Training stores the resolved codes (`with_decision_policy`), so a stored model never depends
    # on this default.
    reason_codes: dict[str, str] | None = None
    # The rating grades (credit_pd.master_scale); absent: the default geometric scale at training.
    master_scale: MasterScale | None = None

    @model_validator(mode="after")
    def _reason_codes_cover_the_features(self) -> DatasetSchema:
        named = {f.name: f.reason_code for f in self.features if f.reason_code is not None}
        if self.reason_codes is None:
            if named:
                raise ValueError(
                    f"features {sorted(named)} name a reason_code but the schema has no reason_codes mapping"
                )
            return self
        empty = sorted(code for code, text in self.reason_codes.items() if not text.strip())
        if empty:
            raise ValueError(f"reason_codes: codes {empty} have no text; each code needs the text a customer is told")
        unknown = sorted(f"{name} -> {code!r}" for name, code in named.items() if code not in self.reason_codes)
        if unknown:
            raise ValueError(f"features name reason codes that reason_codes does not define: {unknown}")
        unmapped = [f.name for f in self.features if f.reason_code is None and not f.never_a_reason]
        if unmapped:
            raise ValueError(
                f"features {unmapped} name no reason_code: with a reason_codes mapping every feature needs "
                "one, or never_a_reason: true"
            )
        unused = sorted(set(self.reason_codes) - set(named.values()))
        if unused:
            raise ValueError(f"reason_codes {unused} are named by no feature")
        return self

    @model_validator(mode="after")
    def _example_names_the_features(self) -> DatasetSchema:
        if self.example is not None and set(self.example) != {f.name for f in self.features}:
            missing = sorted({f.name for f in self.features} - set(self.example))
            unknown = sorted(set(self.example) - {f.name for f in self.features})
            raise ValueError(f"example must give every feature and nothing else; missing {missing}, unknown {unknown}")
        return self

    @model_validator(mode="after")
    def _names_unique(self) -> DatasetSchema:
        names = [self.id_column, self.target_column, *(f.name for f in self.features)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be unique; repeated: {duplicates}")
        return self

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def columns(self) -> list[str]:
        """All columns in file order: id, target, then features."""
        return [self.id_column, self.target_column, *self.feature_names]

    def names_of(self, feature_type: FeatureType) -> list[str]:
        return [f.name for f in self.features if f.type is feature_type]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def resolved_reason_codes(self) -> tuple[dict[str, str], list[str | None]]:
        """({code: text} in schema order, each feature's code or None when never named), the default rule applied."""
        if self.reason_codes is not None:
            return dict(self.reason_codes), [f.reason_code for f in self.features]
        codes = [None if f.never_a_reason else f.name for f in self.features]
        texts = {f.name: (f.description or f.name) for f in self.features if not f.never_a_reason}
        return texts, codes

    def resolved_master_scale(self) -> MasterScale:
        return self.master_scale if self.master_scale is not None else DEFAULT_MASTER_SCALE

    def with_decision_policy(self, master_scale: MasterScale | None = None) -> DatasetSchema:
        """This schema with explicit reason codes and master scale (`master_scale` overrides the schema's).

        Training stores the result, so a stored model carries the exact codes and grades it was
        published with, whatever the defaults in this file become later.
        """
        texts, codes = self.resolved_reason_codes()
        raw = self.model_dump(mode="json", exclude_none=True)
        raw["reason_codes"] = texts
        for feature, code in zip(raw["features"], codes, strict=False):
            if code is not None:
                feature["reason_code"] = code
        raw["master_scale"] = (master_scale or self.resolved_master_scale()).model_dump(mode="json")
        return DatasetSchema.model_validate(raw)


def load_schema(path: Path | str = DEFAULT_SCHEMA_PATH) -> DatasetSchema:
    """Read and validate a schema file; a malformed file fails here, not mid-training."""
    path = Path(path)
    raw = read_yaml(path, "schema file")
    if not isinstance(raw, dict):
        raise SchemaError(f"schema file {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return DatasetSchema.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"schema file {path} is invalid:\n{exc}") from exc
