"""Settings: embedded defaults under the project, environment and .env overrides, secrets hidden."""

from __future__ import annotations

from pathlib import Path

from tuneops.settings import TuneopsSettings


def test_embedded_defaults_live_under_the_project(tmp_path: Path, monkeypatch):
    for key in ("TUNEOPS_TRACKING_URI", "MLFLOW_TRACKING_URI", "TUNEOPS_DATA_STORE_URI"):
        monkeypatch.delenv(key, raising=False)
    settings = TuneopsSettings.load(tmp_path)
    home = (tmp_path / ".tuneops").resolve()
    assert settings.state_home == home
    assert settings.data_store_uri == (home / "data").as_uri()
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.state_db_url == f"sqlite:///{home / 'state.db'}"
    assert settings.artifact_root == (home / "mlartifacts").as_uri()
    assert not home.exists(), "loading settings must not create anything"


def test_dotenv_and_environment_override_defaults(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text(
        "TUNEOPS_DATA_STORE_URI=s3://bucket/prefix\nOPENAI_API_KEY=sk-from-dotenv\n"
    )
    monkeypatch.setenv("TUNEOPS_STATE_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    settings = TuneopsSettings.load(tmp_path)
    assert settings.data_store_uri == "s3://bucket/prefix"
    assert settings.state_db_url == "postgresql+psycopg2://postgres@127.0.0.1/x"
    assert settings.secret_values() == ["sk-from-dotenv"]
    assert "sk-from-dotenv" not in repr(settings)
    assert "sk-from-dotenv" not in str(settings.model_dump())


def test_gateway_address_and_keys_come_from_settings(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("TUNEOPS_GATEWAY_URL", raising=False)
    monkeypatch.delenv("TUNEOPS_GATEWAY_API_KEYS", raising=False)
    assert TuneopsSettings.load(tmp_path).gateway_url == "http://127.0.0.1:8780/v1"
    assert TuneopsSettings.load(tmp_path).gateway_keys == ()
    (tmp_path / ".env").write_text("TUNEOPS_GATEWAY_API_KEYS= gw-one ,gw-two,,gw-one\n")
    monkeypatch.setenv("TUNEOPS_GATEWAY_URL", "http://gateway.internal:9000/v1")
    settings = TuneopsSettings.load(tmp_path)
    assert settings.gateway_url == "http://gateway.internal:9000/v1"
    assert settings.gateway_keys == ("gw-one", "gw-two")
    assert set(settings.secret_values()) == {"gw-one", "gw-two"}
    assert "gw-one" not in repr(settings)
