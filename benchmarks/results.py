"""Benchmarks write their own results: each run replaces its section of docs/benchmarks.md.

A benchmark wraps its run in `recorded(name, command)`: everything it prints still goes to the
terminal, and is also kept; when the run ends without an error, the section between the markers
`<!-- benchmark:NAME -->` and `<!-- /benchmark:NAME -->` is replaced by what it printed, stamped
with the command, the time, the machine's core count and its load average before and after (the
machine is shared, so a figure without its load is not comparable). Other sections stay as they
were. A failed or interrupted run leaves the file untouched, so the document only ever holds
complete runs. The README quotes figures from this file only (tests/test_readme.py checks it).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from credit_pd.files import atomic_write

RESULTS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
PREAMBLE = """# Benchmark results

Written by the benchmarks themselves; do not edit by hand. Each section is replaced whenever its
command runs to the end, and says when, on how many cores and under what load it ran. The machine
these runs come from is shared: compare ratios measured in one run, not absolute figures across
sections. How to run them: README.md, "Benchmarks".
"""


class _Tee(io.TextIOBase):
    """A text stream that writes to the terminal and keeps a copy."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self.terminal.write(text)
        self.kept.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()


def command_line(make_target: str = "") -> str:
    """How this run was started: the make target when run by it with default arguments, else the argv."""
    args = sys.argv[1:]
    if make_target and not args:
        return make_target
    return " ".join(["python -m", Path(sys.argv[0]).stem.join(["benchmarks.", ""]), *args])


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


@contextlib.contextmanager
def recorded(name: str, command: str, path: Path = RESULTS_PATH) -> Iterator[None]:
    """Keep what the block prints; on success, make it section `name` of the results file."""
    started, load_before = time.gmtime(), _load()
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    stamp = (
        f"`{command}`, run {time.strftime('%Y-%m-%d %H:%M UTC', started)} on {os.cpu_count()} cores; "
        f"load average before {load_before}, after {_load()}."
    )
    write_section(path, name, f"## {name}\n\n{stamp}\n\n```text\n{tee.kept.getvalue().rstrip()}\n```\n")


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the marked section `name` of `path`, atomically."""
    begin, end = f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"
    text = path.read_text() if path.is_file() else PREAMBLE
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda out: out.write(text))
