"""All-or-nothing publishing: a real `train.py` killed with SIGKILL at each publishing stage.

After every kill the store must still list (`bentoml models list` exits 0), every report file must
be non-empty, and the predictions must be exactly the previous run's or the new run's; a later
run must leave no temp file behind. The fault hook (`CREDIT_PD_FAULT_AT`) makes the process
SIGKILL itself on reaching a named stage, so each kill lands exactly where the test means it to.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from credit_pd.config import SampleConfig
from credit_pd.files import atomic_write, normal_file_mode, remove_stale_temp_files
from credit_pd.schema import DEFAULT_SCHEMA_PATH
from credit_pd.training.publish import FAULT_ENV, REPORT_MARKER, STAGES
from credit_pd.training.sample import write_sample
from tests.conftest import REPO_ROOT

KILL_SAMPLE_ROWS = 3_000
# Kills before the commit point (old outputs must stay exactly) and after it (the next run
# completes the publication); `report_partly_staged` is right after the first plot is written.
KILL_STAGES = ("report_partly_staged", "journal_written", "report_published", "model_published")
SEED_OLD, SEED_NEW = 11, 12


def test_kill_stages_are_real_stages():
    assert set(KILL_STAGES) <= set(STAGES)


def test_atomic_write_gives_a_normal_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    atomic_write(target, lambda out: out.write("uuid,pd\n"))
    assert stat.S_IMODE(target.stat().st_mode) == normal_file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "test_predictions.csv"
    dead = tmp_path / ".test_predictions.csv.999999999.abc.tmp"  # no such pid
    legacy = tmp_path / ".test_predictions.csv.k2j3.tmp"  # older naming, no pid
    live = tmp_path / f".test_predictions.csv.{os.getpid()}.abc.tmp"
    for path in (dead, legacy, live):
        path.write_text("x")
    remove_stale_temp_files(target)
    assert not dead.exists() and not legacy.exists() and live.exists()


def run_train(
    data: Path, out: Path, env: dict[str, str], seed: int, fault: str | None = None
) -> subprocess.CompletedProcess:
    run_env = {key: value for key, value in env.items() if key != FAULT_ENV}
    if fault is not None:
        run_env[FAULT_ENV] = fault
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            "--data",
            str(data),
            "--schema",
            str(DEFAULT_SCHEMA_PATH),
            "--predictions",
            str(out / "test_predictions.csv"),
            "--report-dir",
            str(out / "reports"),
            "--quick",
            "--quiet",
            "--seed",
            str(seed),
        ],
        cwd=REPO_ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(out: Path, home: Path) -> dict:
    reports = out / "reports"
    latest = home / "models" / "credit_pd_model" / "latest"
    return {
        "predictions": (out / "test_predictions.csv").read_text(),
        "report_run": (reports / REPORT_MARKER).read_text(),
        "report_sizes": {p.name: p.stat().st_size for p in reports.iterdir()},
        "latest": latest.read_text(),
    }


def assert_store_lists(env: dict[str, str]) -> None:
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]


def assert_no_leftovers(out: Path, home: Path) -> None:
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    staging = [p.name for p in home.iterdir() if p.name.startswith(".staging")]
    in_store = [p.name for p in (home / "models" / "credit_pd_model").iterdir() if p.name.startswith(".")]
    assert hidden == [] and staging == [] and in_store == [], (hidden, staging, in_store)


@pytest.mark.slow
def test_sigkill_at_each_publishing_stage_leaves_old_or_new_outputs(tmp_path):
    data = tmp_path / "dataset.csv"
    write_sample(data, SampleConfig(n_rows=KILL_SAMPLE_ROWS, seed=5))
    out, home = tmp_path / "out", tmp_path / "bentoml"
    out.mkdir()
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}

    first = run_train(data, out, env, SEED_OLD)
    assert first.returncode == 0, first.stderr[-3000:]
    old = snapshot(out, home)
    second = run_train(data, out, env, SEED_NEW)
    assert second.returncode == 0, second.stderr[-3000:]
    new = snapshot(out, home)
    assert old["predictions"] != new["predictions"] and old["latest"] != new["latest"]
    assert stat.S_IMODE((out / "test_predictions.csv").stat().st_mode) == normal_file_mode()

    expected = {SEED_OLD: old["predictions"], SEED_NEW: new["predictions"]}
    published_seed = SEED_NEW
    for stage in KILL_STAGES:
        seed = SEED_OLD if published_seed == SEED_NEW else SEED_NEW
        before = snapshot(out, home)
        killed = run_train(data, out, env, seed, fault=stage)
        assert killed.returncode == -signal.SIGKILL, (stage, killed.stderr[-3000:])
        assert_store_lists(env)
        assert all(p.stat().st_size > 0 for p in (out / "reports").iterdir()), stage
        assert (out / "test_predictions.csv").read_text() in (before["predictions"], expected[seed]), stage
        committed = STAGES.index(stage) >= STAGES.index("journal_written")
        if not committed:
            assert snapshot(out, home) == before, f"killed at {stage}, before the commit point, yet the outputs changed"
        # The same run again: it completes what the killed run committed, then publishes itself whole.
        again = run_train(data, out, env, seed)
        assert again.returncode == 0, (stage, again.stderr[-3000:])
        assert ("completing the publication" in again.stdout) == committed, (stage, again.stdout)
        after = snapshot(out, home)
        assert after["predictions"] == expected[seed] and after["latest"] != before["latest"]
        assert f"credit_pd_model:{after['latest']}" in (out / "reports" / "model_card.md").read_text()
        assert_no_leftovers(out, home)
        published_seed = seed
