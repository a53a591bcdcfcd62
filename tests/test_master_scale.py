"""The master scale: grades are monotone in PD, boundaries are data, the Jeffreys back-test matches scipy's Beta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from credit_pd.errors import SchemaError
from credit_pd.master_scale import (
    DEFAULT_MASTER_SCALE,
    Grade,
    MasterScale,
    backtest_grades,
    geometric_scale,
    jeffreys_interval,
    jeffreys_p_value,
    load_master_scale,
    traffic_light,
)


def test_default_scale_is_geometric_with_eight_to_twelve_grades():
    bounds = np.array([g.max_pd for g in DEFAULT_MASTER_SCALE.grades])
    assert 8 <= len(bounds) <= 12 and bounds[-1] == 1.0
    np.testing.assert_allclose(bounds[1:-1] / bounds[:-2], 2.0)


def test_a_higher_pd_never_gets_a_better_grade():
    rng = np.random.default_rng(0)
    pds = np.sort(
        np.concatenate(
            [rng.uniform(0, 1, 5000), 10 ** rng.uniform(-6, 0, 5000), DEFAULT_MASTER_SCALE.edges, [0.0, 1.0]]
        )
    )
    index = DEFAULT_MASTER_SCALE.grade_index(pds)
    assert (np.diff(index) >= 0).all()
    assert index[0] == 0 and index[-1] == len(DEFAULT_MASTER_SCALE.grades) - 1


def test_a_pd_on_an_edge_belongs_to_the_lower_grade():
    scale = MasterScale(grades=(Grade(name="A", max_pd=0.01), Grade(name="B", max_pd=0.1), Grade(name="C", max_pd=1.0)))
    assert scale.grade_names(np.array([0.0, 0.01, 0.0100001, 0.1, 0.5, 1.0])) == ["A", "A", "B", "B", "C", "C"]


@pytest.mark.parametrize(
    ("grades", "message"),
    [
        (
            [{"name": "A", "max_pd": 0.1}, {"name": "B", "max_pd": 0.05}, {"name": "C", "max_pd": 1.0}],
            "grade 'B' has max_pd 0.05",
        ),
        ([{"name": "A", "max_pd": 0.1}, {"name": "B", "max_pd": 0.5}], "must end at max_pd 1.0"),
        ([{"name": "A", "max_pd": 0.1}, {"name": "A", "max_pd": 1.0}], r"repeated: \['A'\]"),
        ([{"name": "A", "max_pd": 0.0}, {"name": "B", "max_pd": 1.0}], "max_pd"),
        ([{"name": "A", "max_pd": 0.1, "colour": "red"}, {"name": "B", "max_pd": 1.0}], "colour"),
    ],
)
def test_bad_scale_files_name_the_field(tmp_path: Path, grades, message):
    import yaml

    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump({"grades": grades}))
    with pytest.raises(SchemaError, match=message):
        load_master_scale(path)


def test_scale_file_round_trips(tmp_path: Path):
    import yaml

    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(geometric_scale(0.01, 3.0, 4).model_dump(mode="json")))
    assert load_master_scale(path).names == ["1", "2", "3", "4"]
    assert load_master_scale(path).edges.tolist() == [0.01, 0.03, 0.09]


def test_jeffreys_p_value_and_interval_are_the_beta_posterior():
    assert jeffreys_p_value(0.02, 30, 1000) == pytest.approx(beta(30.5, 970.5).cdf(0.02))
    low, high = jeffreys_interval(30, 1000)
    assert (low, high) == pytest.approx((beta(30.5, 970.5).ppf(0.025), beta(30.5, 970.5).ppf(0.975)))
    assert jeffreys_interval(0, 50)[0] == 0.0 and jeffreys_interval(50, 50)[1] == 1.0


def test_underestimated_grade_turns_red_and_a_calibrated_one_stays_green():
    rng = np.random.default_rng(1)
    pds = np.full(20_000, 0.015)
    calibrated = (rng.random(20_000) < 0.015).astype(float)
    too_many = (rng.random(20_000) < 0.025).astype(float)
    scale = DEFAULT_MASTER_SCALE
    grade = scale.grade_index(np.array([0.015]))[0]
    assert backtest_grades(calibrated, pds, scale)[grade].traffic_light == "green"
    bad = backtest_grades(too_many, pds, scale)[grade]
    assert bad.traffic_light == "red" and bad.p_value < 0.01
    assert bad.count == 20_000 and bad.defaults == int(too_many.sum()) and bad.mean_pd == pytest.approx(0.015)


def test_backtest_lists_every_grade_with_empty_ones_marked():
    rows = backtest_grades(np.array([0.0, 1.0]), np.array([0.003, 0.003]), DEFAULT_MASTER_SCALE)
    assert "mean_pd" not in rows[0].as_dict() and rows[0].as_dict()["traffic_light"] == "none"
    assert [r.grade for r in rows] == DEFAULT_MASTER_SCALE.names
    assert sum(r.count for r in rows) == 2
    assert {r.traffic_light for r in rows if r.count == 0} == {"none"}


def test_traffic_light_thresholds():
    assert [traffic_light(p) for p in (0.5, 0.05, 0.049, 0.01, 0.0099)] == ["green", "green", "amber", "amber", "red"]
