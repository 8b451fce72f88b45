"""The MLflow adapter itself: what it leaves behind in the process."""

from __future__ import annotations


def test_fluent_leaves_no_tracking_uri_behind_in_the_environment(tmp_path, monkeypatch):
    """Child processes inherit os.environ: a leaked default URI would point them at another store."""
    import os

    from tuneops.registry.mlflow_store import RegistryStore

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    store = RegistryStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with store.fluent():
        assert os.environ["MLFLOW_TRACKING_URI"] == store.tracking_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
