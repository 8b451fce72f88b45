"""``running_service``: reuse what answers, otherwise start the service and stop it afterwards."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tuneops.errors import ServiceError
from tuneops.processes import free_port
from tuneops.serving.local.launcher import (
    ServiceProcess,
    answers_openai,
    running_service,
    start_service,
)
from tuneops.settings import TuneopsSettings

pytestmark = pytest.mark.slow


def test_reuses_a_service_that_already_answers(local_service: ServiceProcess, tmp_path: Path) -> None:
    settings = TuneopsSettings.load(tmp_path)
    with running_service(settings, local_service.base_url) as url:
        assert url == local_service.base_url
    assert answers_openai(local_service.base_url)  # not stopped: it was not ours
    assert not (settings.models_dir / "service.db").exists()


def test_starts_and_stops_the_service_on_the_settings_models_dir(
    tmp_path: Path, tiny_test_model: Path
) -> None:
    settings = TuneopsSettings.load(tmp_path, local_api_key="sk-secret")
    tiny = settings.models_dir / "base" / "tuneops-tiny"
    tiny.parent.mkdir(parents=True)
    tiny.symlink_to(tiny_test_model, target_is_directory=True)
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    assert not answers_openai(base_url)
    with running_service(settings, base_url) as url:
        assert url == base_url
        assert answers_openai(base_url, "sk-secret") and not answers_openai(base_url, "wrong")
        models = httpx.get(f"{base_url}/models", headers={"Authorization": "Bearer sk-secret"}).json()
        assert [m["id"] for m in models["data"]] == ["tuneops-tiny", "smollm2-135m-instruct"]  # the built-ins
    assert not answers_openai(base_url, "sk-secret")
    assert (settings.models_dir / "service.db").is_file()
    assert "sk-secret" not in (settings.models_dir / "service.log").read_text()


def test_remote_url_that_does_not_answer_is_a_service_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ServiceError, match="only be started on"),
        running_service(
            TuneopsSettings.load(tmp_path), "https://models.example.invalid/v1", startup_timeout=1
        ),
    ):
        pass


def test_a_service_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match="exited with code"):
            start_service(tmp_path / "m", port=port, tiny_profile="test", startup_timeout=60)


def test_a_second_service_on_the_same_home_is_refused(local_service: ServiceProcess) -> None:
    with pytest.raises(ServiceError, match="exited with code") as refused:
        start_service(local_service.home, tiny_profile="test", startup_timeout=60)
    assert "another tuneops service already uses" in str(refused.value)
    assert answers_openai(local_service.base_url)  # the first one is unharmed


def test_cli_refuses_a_busy_port_in_one_line(tmp_path: Path) -> None:
    from tuneops.cli.main import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["serve", "models", "--spec", str(tmp_path / "tuneops.yaml"), "--port", str(port)]
        )
    assert result.exit_code == 1
    assert isinstance(result.exception, ServiceError) and "already in use" in result.exception.one_line()
