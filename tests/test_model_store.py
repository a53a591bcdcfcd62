"""credit_pd.model_store: which model a process serves."""

from __future__ import annotations

from credit_pd.model_store import TagSource, model_tag_to_serve


def test_a_built_bento_serves_its_own_model_unless_a_tag_is_set(tmp_path):
    (tmp_path / "src").mkdir()
    service_file = tmp_path / "src" / "service.py"
    (tmp_path / "bento.yaml").write_text(
        "services:\n- name: credit_pd_service\n  models:\n  - tag: credit_pd_model:built4it\n    module: bentoml.lightgbm\n"
    )
    assert model_tag_to_serve("credit_pd_model:latest", False, service_file) == (
        "credit_pd_model:built4it",
        TagSource.BENTO,
    )
    assert model_tag_to_serve("credit_pd_model:pinned", True, service_file) == (
        "credit_pd_model:pinned",
        TagSource.PINNED,
    )
    source_tree = tmp_path / "project" / "repo" / "service.py"
    assert model_tag_to_serve("credit_pd_model:latest", False, source_tree) == (
        "credit_pd_model:latest",
        TagSource.SOURCE_TREE,
    )
    moved = tmp_path / "bento2"
    (moved / "src").mkdir(parents=True)
    (moved / "env").mkdir()
    assert (
        model_tag_to_serve("credit_pd_model:latest", False, moved / "src" / "service.py")[1]
        is TagSource.BENTO_LAYOUT_MOVED
    )
