"""The dataset's column schema, read from one YAML file.

Every other module learns the column names, types and domain bounds from a `DatasetSchema`
so that a different credit dataset can be trained by pointing at a different schema file.
"""

from __future__ import annotations

from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from credit_pd.errors import SchemaError

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
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    # Enforced by the model: e.g. more debt-collection history must never lower the PD.
    monotone: Optional[Monotone] = None

    @model_validator(mode="after")
    def _bounds_only_for_numeric(self) -> "FeatureSpec":
        numeric_only = self.minimum is not None or self.maximum is not None or self.monotone is not None
        if numeric_only and self.type is not FeatureType.NUMERIC:
            raise ValueError(f"feature {self.name!r}: minimum/maximum/monotone apply to numeric features only")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum {self.minimum} > maximum {self.maximum}")
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
    example: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _example_names_the_features(self) -> "DatasetSchema":
        if self.example is not None and set(self.example) != {f.name for f in self.features}:
            missing = sorted({f.name for f in self.features} - set(self.example))
            unknown = sorted(set(self.example) - {f.name for f in self.features})
            raise ValueError(f"example must give every feature and nothing else; missing {missing}, unknown {unknown}")
        return self

    @model_validator(mode="after")
    def _names_unique(self) -> "DatasetSchema":
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


def load_schema(path: Path | str = DEFAULT_SCHEMA_PATH) -> DatasetSchema:
    """Read and validate a schema file; a malformed file fails here, not mid-training."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"schema file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SchemaError(f"schema file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SchemaError(f"schema file {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return DatasetSchema.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"schema file {path} is invalid:\n{exc}") from exc
