"""All-or-nothing publishing of a training run: predictions, report folder, model store entry.

A run first *stages* every output where no reader looks:
- the model in a private BentoML model store under `$BENTOML_HOME/.staging-credit-pd.<pid>.<id>`
  (BentoML writes `model.yaml` in place, and one half-written entry makes `bentoml models list`
  fail for the whole store, so the entry is never built inside the real store);
- the predictions in a temp file beside the target; the report in a temp folder beside the target.
Then it writes a journal (`publish.json`, atomically) into the staging folder: that is the commit
point. Only then does it move things into place, each by one rename, in this order: predictions,
report folder (swapped whole), model version folder, and last the store's `latest` file (a temp
file renamed over it). Before the commit point the previous outputs are untouched; a run killed
after it is completed by the next run's `recover()` (every step is idempotent), so the outputs
are never left mixed for longer than a crash lasts. `recover()` also deletes every temp file and
folder left by processes that no longer run.

`CREDIT_PD_FAULT_AT=<stage>` makes the process SIGKILL itself when it reaches that stage: a test
hook, used by tests/training/test_publish_kill.py to kill a real `train.py` at each stage.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import bentoml

from credit_pd.files import (
    atomic_write,
    make_temp_dir_beside,
    normal_dir_mode,
    owner_pid,
    pid_is_alive,
    remove_stale_temp_files,
    write_temp_beside,
)
from credit_pd.model_store import model_store_dir

log = logging.getLogger(__name__)

FAULT_ENV = "CREDIT_PD_FAULT_AT"
STAGING_PREFIX = ".staging-credit-pd"
JOURNAL = "publish.json"
# Hidden file in a published report folder naming the run that wrote it: tells recovery whether
# the folder swap already happened (the swap leaves no other trace).
REPORT_MARKER = ".published_by"
LATEST_FILE = "latest"
# Stages where the fault hook can fire, in the order a run passes them.
STAGES = (
    "model_staged",
    "predictions_staged",
    "report_partly_staged",
    "report_staged",
    "journal_written",
    "predictions_published",
    "report_published",
    "model_published",
    "latest_published",
)


def fault_point(stage: str) -> None:
    """SIGKILL this process at `stage` when the test hook asks for it (no clean-up runs)."""
    if os.environ.get(FAULT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Journal:
    """What to move where; written once everything is staged (the commit point)."""

    run_id: str
    predictions_tmp: str
    predictions: str
    report_tmp: str
    report: str
    model_tmp: str
    model: str
    latest: str
    version: str

    def save(self, staging: Path) -> None:
        atomic_write(staging / JOURNAL, lambda out: json.dump(asdict(self), out, indent=1))

    @classmethod
    def load(cls, staging: Path) -> Journal | None:
        try:
            return cls(**json.loads((staging / JOURNAL).read_text()))
        except (OSError, ValueError, TypeError):
            return None


class Publication:
    """One run's staged outputs; `commit()` publishes them, `discard()` throws them away."""

    def __init__(self, predictions_path: Path, report_dir: Path) -> None:
        self.predictions_path = Path(predictions_path).absolute()
        self.report_dir = Path(report_dir).absolute()
        self.run_id = uuid.uuid4().hex[:12]
        self.store_dir = model_store_dir()
        self.staging = self.store_dir.parent / f"{STAGING_PREFIX}.{os.getpid()}.{self.run_id}"
        self.staging.mkdir(parents=True)
        self.predictions_tmp: Path | None = None
        self.report_tmp: Path | None = None
        self.model: bentoml.Model | None = None

    def stage_model(self, save: Callable[[Path], bentoml.Model]) -> bentoml.Model:
        """`save(store_dir)` saves into the private store; returns the staged model (tag final)."""
        self.model = save(self.staging / "models")
        # BentoML builds the entry in a mkdtemp folder and copies its 0700 mode; give it a normal one.
        os.chmod(self.model.path, normal_dir_mode())
        fault_point("model_staged")
        return self.model

    def stage_predictions(self, write: Callable[[TextIO], object]) -> None:
        self.predictions_tmp = write_temp_beside(self.predictions_path, write)
        fault_point("predictions_staged")

    def stage_report(self, write: Callable[[Path], object]) -> Path:
        """`write(folder)` fills a fresh temp folder beside the report folder."""
        self.report_tmp = make_temp_dir_beside(self.report_dir, ".staging")
        write(self.report_tmp)
        (self.report_tmp / REPORT_MARKER).write_text(self.run_id + "\n")
        fault_point("report_staged")
        return self.report_tmp

    def commit(self) -> None:
        """Write the journal (commit point), then move everything into place, `latest` last."""
        if self.model is None or self.predictions_tmp is None or self.report_tmp is None:
            raise RuntimeError("commit() before the model, the predictions and the report were staged")
        tag = self.model.tag
        assert tag.version is not None, "a saved model always has a version"
        journal = Journal(
            run_id=self.run_id,
            predictions_tmp=str(self.predictions_tmp),
            predictions=str(self.predictions_path),
            report_tmp=str(self.report_tmp),
            report=str(self.report_dir),
            model_tmp=str(Path(self.model.path)),
            model=str(self.store_dir / tag.name / str(tag.version)),
            latest=str(self.store_dir / tag.name / LATEST_FILE),
            version=str(tag.version),
        )
        journal.save(self.staging)
        fault_point("journal_written")
        apply_journal(journal)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """A failed run: remove everything it staged; the published outputs were never touched."""
        for path in (self.predictions_tmp,):
            if path is not None:
                path.unlink(missing_ok=True)
        for folder in (self.report_tmp, self.staging):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def apply_journal(journal: Journal) -> None:
    """The publishing steps; each one checks whether it already happened, so replaying is safe."""
    if Path(journal.predictions_tmp).exists():
        os.replace(journal.predictions_tmp, journal.predictions)
    fault_point("predictions_published")
    swap_in_report(Path(journal.report_tmp), Path(journal.report), journal.run_id)
    fault_point("report_published")
    model_tmp, model = Path(journal.model_tmp), Path(journal.model)
    if model_tmp.exists() and not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        os.rename(model_tmp, model)
    fault_point("model_published")
    latest = Path(journal.latest)
    atomic_write(latest, lambda out: out.write(journal.version))
    fault_point("latest_published")


def swap_in_report(staged: Path, report: Path, run_id: str) -> None:
    """Put the staged folder where the report folder is, atomically where the kernel allows."""
    marker = report / REPORT_MARKER
    if marker.is_file() and marker.read_text().strip() == run_id:
        shutil.rmtree(staged, ignore_errors=True)  # already swapped; `staged` holds the old report
        return
    if not staged.is_dir():
        return
    if report.is_dir() and exchange_paths(staged, report):
        shutil.rmtree(staged, ignore_errors=True)
        return
    if report.exists():
        aside = report.parent / f".{report.name}.{os.getpid()}.{run_id}.old"
        os.rename(report, aside)
        os.rename(staged, report)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(staged, report)


def exchange_paths(first: Path, second: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two folders in one step. False where unsupported."""
    rename_exchange, at_fdcwd = 2, -100
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return result == 0


def recover(predictions_path: Path, report_dir: Path) -> None:
    """Finish runs that died after their commit point; delete what dead runs left behind."""
    store_dir = model_store_dir()
    home = store_dir.parent
    if home.is_dir():
        for staging in sorted(home.glob(f"{STAGING_PREFIX}.*")):
            pid = owner_pid(staging.name, STAGING_PREFIX[1:])
            if pid is not None and pid_is_alive(pid):
                continue
            journal = Journal.load(staging)
            if journal is not None:
                print(
                    f"completing the publication of an interrupted training run ({journal.run_id}, model version {journal.version})"
                )
                apply_journal(journal)
            else:
                log.info("removing %s left by an interrupted training run", staging)
            shutil.rmtree(staging, ignore_errors=True)
    for target in (Path(predictions_path).absolute(), Path(report_dir).absolute()):
        for removed in remove_stale_temp_files(target):
            log.info("removed %s left by an interrupted run", removed)
    if store_dir.is_dir():
        for name_dir in store_dir.iterdir():
            if name_dir.is_dir():
                remove_stale_temp_files(name_dir / LATEST_FILE)


def publication(predictions_path: Path, report_dir: Path) -> Publication:
    """Recover from earlier interrupted runs, then open this run's staging area."""
    recover(predictions_path, report_dir)
    return Publication(predictions_path, report_dir)
