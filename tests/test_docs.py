"""Generated documents stay generated: docs/configuration.md is what scripts/settings_doc.py writes."""

from __future__ import annotations

import importlib.util

from credit_pd.serving.settings import ServingSettings
from tests.conftest import REPO_ROOT


def load_settings_doc():
    spec = importlib.util.spec_from_file_location("settings_doc", REPO_ROOT / "scripts" / "settings_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_document_is_current():
    settings_doc = load_settings_doc()
    assert settings_doc.main(["--check"]) == 0, "docs/configuration.md is stale: run python scripts/settings_doc.py"


def test_every_setting_is_documented_where_it_is_defined():
    settings_doc = load_settings_doc()
    comments = settings_doc.field_comments((REPO_ROOT / "credit_pd" / "serving" / "settings.py").read_text())
    undocumented = [name for name in ServingSettings.model_fields if not comments.get(name)]
    # A comment block may cover a pair of settings (e.g. large_batch_rows / large_batch_threads), never more.
    names = list(ServingSettings.model_fields)
    assert all(names.index(n) > 0 and comments.get(names[names.index(n) - 1]) for n in undocumented), undocumented
