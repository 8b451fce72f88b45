"""Where ``tuneops run`` tells a user to look: the servers' UIs when the project runs on servers
(``tuneops up`` exports their addresses), else the commands that open the embedded stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.cli.run import ui_addresses
from tuneops.settings import TuneopsSettings

ENV = ("TUNEOPS_TRACKING_URI", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "TUNEOPS_PREFECT_UI_URL",
       "TUNEOPS_MLFLOW_UI_URL")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)


def test_embedded_stores_get_the_commands_that_open_them(tmp_path: Path) -> None:
    settings = TuneopsSettings.load(tmp_path)
    mlflow_ui, prefect_ui = ui_addresses(settings)
    assert mlflow_ui == f"mlflow ui --backend-store-uri {settings.tracking_uri}"
    assert prefect_ui == f"PREFECT_HOME={settings.state_home / 'prefect'} prefect server start"


def test_servers_get_their_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEOPS_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert ui_addresses(TuneopsSettings.load(tmp_path)) == ("http://127.0.0.1:5000", "http://127.0.0.1:4200")
    monkeypatch.setenv("TUNEOPS_PREFECT_UI_URL", "https://prefect.example.org")
    monkeypatch.setenv("TUNEOPS_MLFLOW_UI_URL", "https://mlflow.example.org")
    assert ui_addresses(TuneopsSettings.load(tmp_path)) == (
        "https://mlflow.example.org",
        "https://prefect.example.org",
    )
