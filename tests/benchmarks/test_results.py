"""benchmarks.results: a benchmark's run replaces its own section of docs/benchmarks.md, and only on success."""

from __future__ import annotations

import pytest

from benchmarks.results import recorded


def test_a_run_replaces_its_own_section_and_keeps_the_others(tmp_path, capsys):
    path = tmp_path / "benchmarks.md"
    with recorded("load", "make load-benchmark", path):
        print("ratio 1.50")
    with recorded("batch", "make batch-benchmark", path):
        print("rows/s 100")
    with recorded("load", "make load-benchmark", path):
        print("ratio 2.00")
    text = path.read_text()
    assert "ratio 2.00" in text and "ratio 1.50" not in text and "rows/s 100" in text
    assert text.count("<!-- benchmark:load -->") == 1
    assert "cores; load average before" in text and "`make load-benchmark`" in text
    assert "ratio 2.00" in capsys.readouterr().out, "the terminal still sees everything"


def test_a_failed_run_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "benchmarks.md"
    with recorded("load", "make load-benchmark", path):
        print("ratio 1.50")
    before = path.read_text()
    with pytest.raises(RuntimeError), recorded("load", "make load-benchmark", path):
        print("half a run")
        raise RuntimeError("interrupted")
    assert path.read_text() == before
