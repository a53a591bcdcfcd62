"""The house's import rules (../shared/ARCHITECTURE.md), checked on the source.

- The core (`credit_pd/*.py`) imports no wing: wings build on the core, never the other way.
- Serving, batch and monitoring never import the training wing: what two wings need is in the core.
- Training imports the core and, of the other wings, only monitoring's reference builder.
Imports inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "credit_pd"
WINGS = ("training", "serving", "batch", "monitoring")
TRAINING_MAY_IMPORT = {"credit_pd.monitoring", "credit_pd.monitoring.reference"}


def imported_modules(path: Path) -> set[str]:
    """Every `credit_pd...` module a file imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "credit_pd" or name.startswith("credit_pd.")}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def modules_of(wing: str | None) -> list[Path]:
    if wing is None:
        return sorted(PACKAGE.glob("*.py"))
    return sorted((PACKAGE / wing).rglob("*.py"))


def test_the_rules_see_every_wing():
    for wing in WINGS:
        assert modules_of(wing), f"no modules found for wing {wing!r}: the layout moved, update this test"


@pytest.mark.parametrize("path", modules_of(None), ids=lambda p: p.name)
def test_the_core_imports_no_wing(path):
    wings = sorted({m for m in imported_modules(path) if wing_of(m)})
    assert not wings, f"core module {path.name} imports wing module(s) {wings}; move what it needs into the core"


@pytest.mark.parametrize(
    "path",
    [p for w in ("serving", "batch", "monitoring") for p in modules_of(w)],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_serving_batch_and_monitoring_never_import_training(path):
    training = sorted(m for m in imported_modules(path) if wing_of(m) == "training")
    assert not training, f"{path.parent.name}/{path.name} imports the training wing: {training}"


@pytest.mark.parametrize("path", modules_of("training"), ids=lambda p: p.name)
def test_training_imports_the_core_and_monitorings_reference_builder_only(path):
    other = sorted(
        m for m in imported_modules(path) if wing_of(m) not in (None, "training") and m not in TRAINING_MAY_IMPORT
    )
    assert not other, f"training/{path.name} imports {other}"


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from credit_pd.training.run import run_training\n    import credit_pd.serving.scorer\n"
    )
    assert imported_modules(source) == {"credit_pd.training.run", "credit_pd.serving.scorer"}
