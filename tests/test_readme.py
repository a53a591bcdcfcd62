"""README.md is a user's document: short, a working request early, no dates, no work items, and no
figure that a benchmark does not write into docs/benchmarks.md.

The request itself is run against a real server in tests/serving/test_service.py
(`test_the_readme_request_gets_the_readme_answer`).
"""

from __future__ import annotations

import json
import re

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
BENCHMARKS = REPO_ROOT / "docs" / "benchmarks.md"
# A measured figure: a number with a unit of speed, time, size or a ratio (not a setting such as "8 MiB").
FIGURE = re.compile(r"\b\d[\d,]*(?:\.\d+)?\s?(?:x|×|ms|s|rows/s|req/s|%|MB|GB)(?![\w/])")


def readme_request() -> str:
    """The README's first shell block that posts to /predict."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return next(block for block in blocks if "/predict" in block)


def readme_answer() -> list[dict]:
    """The JSON answer the README shows right after the request."""
    block = re.search(r"```json\n(.*?)```", README, flags=re.S)
    assert block, "the README shows no JSON answer"
    return json.loads(block.group(1))


def test_readme_is_short_and_shows_a_request_early():
    lines = README.splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; keep it a user's document (details go to docs/)"
    first_curl = next(i for i, line in enumerate(lines, start=1) if line.lstrip().startswith("curl "))
    assert first_curl <= 50, f"the first curl request is on line {first_curl}"
    assert readme_request().lstrip().startswith("curl ")


def test_readme_answer_is_the_documented_contract():
    from credit_pd.serving.contract import PredictionOut

    for answer in readme_answer():
        PredictionOut.model_validate(answer)


def test_readme_has_no_dates_and_no_work_item_numbers():
    assert not re.search(r"20\d\d-[01]\d-[0-3]\d|\bUTC\b", README), "dates belong in docs/benchmarks.md"
    assert not re.search(r"\bissues? #?\d+|\bwork items? \d+", README, flags=re.I)


def test_every_figure_in_the_readme_comes_from_a_benchmark():
    figures = sorted(set(FIGURE.findall(README)))
    results = BENCHMARKS.read_text() if BENCHMARKS.is_file() else ""
    missing = [figure for figure in figures if figure not in results]
    assert not missing, f"README quotes figures no benchmark wrote to docs/benchmarks.md: {missing}"


def test_the_figure_pattern_finds_measured_figures():
    assert FIGURE.findall("2.5x the peer, p99 12.3 ms, 13,574 rows/s, 8 MiB") == ["2.5x", "12.3 ms", "13,574 rows/s"]
