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
    assert {
        "account_status",
        "merchant_category",
        "merchant_group",
        "name_in_email",
        "worst_status_active_inv",
    } <= categorical
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
        (
            "name: x\nid_column: id\ntarget_column: y\nfeatures:\n  - {name: a, type: categorical, minimum: 0}",
            "numeric features only",
        ),
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


def _with(raw_features: list[dict], **extra) -> str:
    import yaml

    return yaml.safe_dump({"name": "x", "id_column": "id", "target_column": "y", "features": raw_features, **extra})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _with([{"name": "a", "type": "numeric", "reason_code": "A"}]),
            r"features \['a'\] name a reason_code but the schema has no reason_codes",
        ),
        (
            _with([{"name": "a", "type": "numeric", "reason_code": "B"}], reason_codes={"A": "x"}),
            r"do not define: \[\"a -> 'B'\"\]|does not define",
        ),
        (_with([{"name": "a", "type": "numeric"}], reason_codes={"A": "x"}), r"features \['a'\] name no reason_code"),
        (
            _with([{"name": "a", "type": "numeric", "reason_code": "A"}], reason_codes={"A": "x", "B": "y"}),
            r"reason_codes \['B'\] are named by no feature",
        ),
        (
            _with([{"name": "a", "type": "numeric", "reason_code": "A"}], reason_codes={"A": " "}),
            r"codes \['A'\] have no text",
        ),
        (
            _with(
                [{"name": "a", "type": "numeric", "reason_code": "A", "never_a_reason": True}], reason_codes={"A": "x"}
            ),
            "feature 'a': a feature with never_a_reason: true names no reason_code",
        ),
        (
            _with(
                [{"name": "a", "type": "numeric"}],
                master_scale={"grades": [{"name": "1", "max_pd": 0.5}, {"name": "2", "max_pd": 0.4}]},
            ),
            r"master_scale\.grades: max_pd must increase",
        ),
    ],
)
def test_bad_reason_codes_and_scales_name_the_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message):
        load_schema(path)


def test_klarna_reason_codes_and_never_named_features(schema):
    texts, codes = schema.resolved_reason_codes()
    by_feature = dict(zip(schema.feature_names, codes, strict=False))
    assert {name for name, code in by_feature.items() if code is None} == {
        "age",
        "time_hours",
        "merchant_category",
        "merchant_group",
    }
    assert {n for n, c in by_feature.items() if c == "DEBT_COLLECTION"} == {
        "num_arch_dc_0_12m",
        "num_arch_dc_12_24m",
        "account_days_in_dc_12_24m",
    }
    assert texts["DEBT_COLLECTION"] == "Invoices that went to debt collection in the last 24 months"
    assert all(text.strip() for text in texts.values())


def test_decision_policy_is_made_explicit_and_survives_the_store_round_trip(tmp_path: Path):
    from credit_pd.master_scale import DEFAULT_MASTER_SCALE, geometric_scale
    from credit_pd.schema import DatasetSchema

    bare = load_schema(FIXTURES / "german_credit_schema.yaml")
    assert bare.reason_codes is None and bare.master_scale is None
    resolved = bare.with_decision_policy()
    assert resolved.reason_codes == {f.name: f.description for f in bare.features}
    assert [f.reason_code for f in resolved.features] == bare.feature_names
    assert resolved.master_scale == DEFAULT_MASTER_SCALE
    lender = geometric_scale(0.01, 3.0, 4)
    stored = DatasetSchema.model_validate(bare.with_decision_policy(lender).model_dump(mode="json", exclude_none=True))
    assert (
        stored.resolved_master_scale() == lender and stored.resolved_reason_codes() == resolved.resolved_reason_codes()
    )
