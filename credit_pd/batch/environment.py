"""What Spark needs from the machine, checked before a session starts, with actionable errors.

pyspark starts a JVM: without Java 17+ it fails with a long Py4J trace that never says which
package to install, so the check names it. Executors must run the same Python (and so the same
pandas, LightGBM and credit_pd) as the driver, hence PYSPARK_PYTHON.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from credit_pd.batch.settings import JAVA_PACKAGE, MIN_JAVA_MAJOR
from credit_pd.errors import CreditPDError

# `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_392" for Java 8).
JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
INSTALL_JAVA = f"install it with `apt-get install -y {JAVA_PACKAGE}` (Debian/Ubuntu) or set JAVA_HOME to a Java {MIN_JAVA_MAJOR}+ runtime"


class SparkEnvironmentError(CreditPDError):
    """The machine cannot run Spark: no suitable Java, or pyspark not installed."""


def java_executable() -> str | None:
    """JAVA_HOME's java when set (what spark-submit uses), else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    """Major version of a java binary (8 for "1.8.0_392"), None when it does not answer."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = JAVA_VERSION.search(result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> int:
    """Java's major version; raises with the Debian package to install when it is missing or old."""
    java = java_executable()
    if java is None:
        raise SparkEnvironmentError(
            f"Spark needs Java {MIN_JAVA_MAJOR}+ and no `java` was found (JAVA_HOME, PATH): {INSTALL_JAVA}"
        )
    major = java_major_version(java)
    if major is None or major < MIN_JAVA_MAJOR:
        found = "an unreadable version" if major is None else f"Java {major}"
        raise SparkEnvironmentError(f"Spark needs Java {MIN_JAVA_MAJOR}+ but {java} is {found}: {INSTALL_JAVA}")
    return major


def require_pyspark() -> None:
    """pyspark is an optional extra; say how to get it instead of an ImportError deep in a job."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkEnvironmentError(
            'batch scoring needs pyspark, an optional extra: `pip install -e ".[spark]"` (`make install` installs it)'
        ) from exc


def prepare_python_workers() -> None:
    """Point Spark's Python workers at this interpreter and quiet a warning that we handle.

    PYSPARK_PYTHON defaults to `python3` on PATH, which need not be the venv holding LightGBM and
    credit_pd; a value the user or spark-submit set is kept. PySpark 4 warns on every pandas UDF
    that pandas >= 3 "is not fully supported": the one breakage found with this project's pins
    (pandas 3.1, numpy 2.4, pyarrow) is the non-Arrow conversion path, which the job never takes
    (`credit_pd.batch.job.SPARK_CONF` forces Arrow and disables the silent fallback; the tests in
    tests/batch/test_pandas_arrow.py show what that path would corrupt), so the warning is
    filtered rather than repeated per partition.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
