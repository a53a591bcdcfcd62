"""Writing output files so that a failure never leaves a half-written file in place.

Temp files are named `.<target name>.<pid>.<random>.tmp` beside their target, so a later run can
tell a leftover of a killed process (its pid is gone) from a file another live run is writing,
and remove it (`remove_stale_temp_files`). Files get the mode a plain `open(path, "w")` would give
(0666 less the umask), not the 0600 that `mkstemp` uses, so other users and containers can read
what training wrote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import yaml

from credit_pd.errors import SchemaError

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_file_mode() -> int:
    return 0o666 & ~current_umask()


def normal_dir_mode() -> int:
    return 0o777 & ~current_umask()


def temp_prefix(target: Path) -> str:
    """Hidden, pid-tagged prefix of temp files and dirs beside `target`."""
    return f".{target.name}.{os.getpid()}."


def pid_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str, target_name: str) -> int | None:
    """The pid embedded in a temp name `.<target>.<pid>.<...>`; None when it has none."""
    rest = name[len(target_name) + 2 :] if name.startswith(f".{target_name}.") else ""
    head = rest.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale_temp_files(target: Path) -> list[Path]:
    """Delete temp files/dirs beside `target` left by processes that no longer run."""
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.glob(f".{target.name}.*"):
        pid = owner_pid(entry.name, target.name)
        if pid is not None and pid_is_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_temp_beside(path: Path, write: Callable[[TextIO], object]) -> Path:
    """Write a complete, fsynced temp file beside `path` with a normal mode; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, normal_file_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write through `write(handle)` into a temp file beside `path`, then rename it into place.

    The rename is atomic on one filesystem, so readers see the old file or the whole new one.
    """
    tmp = write_temp_beside(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_temp_dir_beside(path: Path, suffix: str) -> Path:
    """An empty hidden dir beside `path` (same filesystem, so it can be renamed onto `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix))
    os.chmod(tmp, normal_dir_mode())
    return tmp


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of a YAML policy file (a schema, a master scale); one-line errors naming it.

    `what` names the file in the message ("schema file", "master scale file"); the caller validates
    the content against its own model.
    """
    if not path.is_file():
        raise SchemaError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SchemaError(f"{what} {path} is not valid YAML: {exc}") from exc
