"""The schema file is the single source of column facts; malformed files fail early and clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from credit_pd.errors import SchemaError
from credit_pd.schema import FeatureType, load_schema

from tests.conftest import FIXTURES


def test_klarna_schema_has_the_documented_columns(schema):
    assert schema.id_column == "uuid" and schema.target_column == "default"
    assert schema.separator == ";" and schema.missing_marker == "NA"
    assert len(schema.features) == 41
    assert schema.names_of(FeatureType.BOOLEAN) == ["has_paid"]
    categorical = set(schema.names_of(FeatureType.CATEGORICAL))
    assert {"account_status", "merchant_category", "merchant_group", "name_in_email", "worst_status_active_inv"} <= categorical
    assert {n for n in schema.feature_names if n.startswith(("account_worst_status", "status_"))} <= categorical
    assert len(categorical) == 15
    assert schema.columns[:2] == ["uuid", "default"]


def test_uuid_is_not_a_feature(schema):
    assert schema.id_column not in schema.feature_names


def test_second_schema_loads():
    other = load_schema(FIXTURES / "german_credit_schema.yaml")
    assert other.id_column == "application_id" and other.separator == ","
    assert other.feature("purpose").nullable is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list", "must hold a mapping"),
        ("name: x\nid_column: id\ntarget_column: y\nfeatures: []", "features"),
        ("name: x\nid_column: id\ntarget_column: y\nfeatures:\n  - {name: a, type: text}", "type"),
        ("name: x\nid_column: id\ntarget_column: y\nfeatures:\n  - {name: id, type: numeric}", "repeated: \\['id'\\]"),
        ("name: x\nid_column: id\ntarget_column: y\nfeatures:\n  - {name: a, type: categorical, minimum: 0}", "numeric features only"),
        ("name: x\nid_column: id\ntarget_column: y\ncolour: red\nfeatures:\n  - {name: a, type: numeric}", "colour"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_malformed_schema_is_explained(tmp_path: Path, text: str, message: str):
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message):
        load_schema(path)


def test_absent_schema(tmp_path: Path):
    with pytest.raises(SchemaError, match="does not exist"):
        load_schema(tmp_path / "absent.yaml")


def test_example_must_name_every_feature(tmp_path):
    import yaml

    from credit_pd.errors import SchemaError
    from credit_pd.schema import DEFAULT_SCHEMA_PATH, load_schema

    raw = yaml.safe_load(DEFAULT_SCHEMA_PATH.read_text())
    del raw["example"]["age"]
    raw["example"]["shoe_size"] = 42
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SchemaError, match=r"missing \['age'\], unknown \['shoe_size'\]"):
        load_schema(path)
