"""``tuneops serve models``: run the local OpenAI-compatible fine-tuning and inference service."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, err_console, settings_for
from tuneops.errors import ServiceError, UsageError
from tuneops.providers import local_service_key

serve_app = typer.Typer(help="Run tuneops' own services.", no_args_is_help=True)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServiceError(
                    f"port {port} on {host} is already in use",
                    hint="pick another with --port, or stop what runs there",
                ) from exc
            raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


@serve_app.command("models")
def serve_models(
    spec: SpecOption = DEFAULT_SPEC,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="TUNEOPS_LOCAL_API_KEY",
            show_envvar=True,
            help="Require this bearer token (default: the settings' local_api_key, else none).",
        ),
    ] = None,
    base_model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--base-model-dir", help="A Hugging Face causal LM folder to serve and fine-tune (repeatable)."
        ),
    ] = None,
    tiny_profile: Annotated[
        str,
        typer.Option(
            envvar="TUNEOPS_TINY_PROFILE", help="Size of the built-in base model: default or test (seconds)."
        ),
    ] = "default",
    prebuild: Annotated[bool, typer.Option(help="Build tuneops-tiny before accepting requests.")] = True,
) -> None:
    """Serve /v1/files, /v1/fine_tuning/jobs, /v1/models and /v1/chat/completions, OpenAI style.

    State (base models, uploaded files, jobs, adapters) lives in the project's models dir.
    """
    from tuneops.serving.local.__main__ import main as service_main
    from tuneops.serving.local.tinymodel import PROFILES

    if tiny_profile not in PROFILES:
        raise UsageError(f"--tiny-profile must be one of {', '.join(sorted(PROFILES))}, not {tiny_profile!r}")
    for folder in base_model_dir or []:
        if not (folder / "config.json").is_file():
            raise UsageError(
                f"--base-model-dir {folder}: no config.json there; give a Hugging Face model folder"
            )
    settings = settings_for(spec)
    key = api_key or local_service_key(settings)
    _check_port(host, port)
    err_console.print(
        f"tuneops local service on http://{host}:{port}/v1 (home {settings.models_dir})"
        + (", bearer key required" if key else "")
    )
    argv = [
        "--host",
        host,
        "--port",
        str(port),
        "--home",
        str(settings.models_dir),
        "--tiny-profile",
        tiny_profile,
        "--log-level",
        "info",
    ]
    for folder in base_model_dir or []:
        argv += ["--base-model-dir", str(folder)]
    if prebuild:
        argv.append("--prebuild")
    if key:
        argv += ["--api-key", key]
    service_main(argv)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` group to the root app."""
    app.add_typer(serve_app, name="serve")
