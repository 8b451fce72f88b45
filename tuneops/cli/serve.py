"""``tuneops serve models`` (the local tuning and inference service) and ``tuneops serve gateway``."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, err_console, load_project, settings_for
from tuneops.errors import ServiceError, UsageError
from tuneops.providers import local_service_key
from tuneops.settings import DEFAULT_GATEWAY_PORT, TuneopsSettings

serve_app = typer.Typer(help="Run tuneops' own services.", no_args_is_help=True)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: a port whose last connections linger in TIME_WAIT (a restart) is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


GATEWAY_KEYS_ENV = "TUNEOPS_GATEWAY_API_KEYS"


def gateway_keys(given: Sequence[str] | None, settings: TuneopsSettings) -> tuple[str, ...]:
    """``--api-key`` values, else the settings' ``gateway_api_keys`` (``TUNEOPS_GATEWAY_API_KEYS``
    from the environment or the project's ``.env``); empty means the gateway asks for no key."""
    if given:
        return tuple(dict.fromkeys(k.strip() for k in given if k.strip()))
    return settings.gateway_keys


@serve_app.command("gateway")
def serve_gateway(
    spec: SpecOption = DEFAULT_SPEC,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_GATEWAY_PORT,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help=f"Accept this bearer key (repeatable; default: {GATEWAY_KEYS_ENV}, comma-separated; "
            "none set means no key is asked for).",
        ),
    ] = None,
    spool: Annotated[
        Path | None,
        typer.Option(
            help="The request log's crash spool (default .tuneops/gateway/spool). Each gateway process "
            "needs its own: give every replica sharing a project folder a folder of its own, and a "
            "restarted replica the same one (it replays what was answered but not yet stored).",
        ),
    ] = None,
    local_service: Annotated[
        bool,
        typer.Option(
            "--local-service/--no-local-service",
            help="Start the local service when a served version needs it and nothing answers at its "
            "URL, and restart it if it exits (stopped with the gateway; one it did not start is "
            "used and left alone).",
        ),
    ] = True,
) -> None:
    """Serve the project's model OpenAI style, routed by its MLflow aliases and rollout state.

    Clients ask for the registered model name (or NAME@ALIAS, NAME/VERSION) at /v1/chat/completions.
    Every request is logged to the state database; the spool under .tuneops/gateway/spool keeps
    what was answered but not yet stored across a crash. A served version on the local provider
    gets the local service started and supervised unless --no-local-service.
    """
    # The routing refresh asks MLflow every couple of seconds: a slow or vanished tracking server
    # should cost one short failed refresh (the last table keeps serving), not MLflow's default
    # minutes of retries and backoff, which also held up shutdown until they ran out.
    for variable, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")):
        os.environ.setdefault(variable, value)
    import uvicorn

    from tuneops.registry.ledger import Ledger
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.requestlog import RequestLog, RequestLogWriter
    from tuneops.routing_state import RoutingState
    from tuneops.serving.gateway.app import Gateway, GatewayConfig
    from tuneops.serving.gateway.metrics import GatewayMetrics
    from tuneops.serving.gateway.supervisor import LocalServiceSupervisor
    from tuneops.serving.gateway.upstreams import provider_endpoints

    project = load_project(spec)
    settings = project.settings
    keys = gateway_keys(api_key, settings)
    _check_port(host, port)
    assert settings.state_db_url is not None
    store = RegistryStore.from_settings(settings)
    endpoints = provider_endpoints(project.spec.provider, settings)
    with contextlib.ExitStack() as stack:
        routing = RoutingState.open(settings.state_db_url)
        stack.callback(routing.close)
        ledger = Ledger.open(settings.state_db_url)
        stack.callback(ledger.close)
        request_log = RequestLog.open(settings.state_db_url)
        stack.callback(request_log.close)
        writer = RequestLogWriter(
            request_log,
            spool or settings.state_home / "gateway" / "spool",
            sync=project.spec.serving.request_log_sync,
        )
        replayed = writer.start()
        stack.callback(writer.close)
        if replayed.records:
            err_console.print(f"[dim]request log: {replayed.records} spooled record(s) replayed[/dim]")
        sink = writer
        metrics = GatewayMetrics()
        if project.spec.serving.trace_sample_rate > 0:
            from tuneops.registry.traces import TraceRecorder
            from tuneops.serving.gateway.tracing import TracingWriter

            recorder = TraceRecorder(store, project.spec.model.name)
            sink = TracingWriter(writer, recorder, project.spec.serving.trace_sample_rate, metrics)
            stack.callback(sink.close)
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        config = GatewayConfig(
            (project.spec.model.name,),
            serving=project.spec.serving,
            answer_format=project.spec.evaluation.format,
            api_keys=keys,
            webhook_secret=secret,
        )
        supervisor = (
            LocalServiceSupervisor.for_endpoint(settings, endpoints["local"]) if local_service else None
        )
        gateway = Gateway(
            config, store=store, routing=routing, ledger=ledger, request_log=request_log, writer=sink,
            endpoints=endpoints, metrics=metrics, local_service=supervisor,
        )  # fmt: skip
        err_console.print(
            f"tuneops gateway on http://{host}:{port}/v1 serving {project.spec.model.name}"
            + (f", {len(keys)} bearer key(s) accepted" if keys else ", no key required")
        )
        server = uvicorn.Server(
            uvicorn.Config(
                gateway.asgi(), host=host, port=port, log_level="warning", lifespan="on", proxy_headers=False
            )
        )
        with _sigterm_exits_cleanly():
            server.run()


@contextlib.contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """Make SIGTERM a normal exit, so the request log is flushed and the spool released.

    uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    installed before it; with the default one the process would die before our cleanup ran.
    """
    import signal

    def _exit(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` group to the root app."""
    app.add_typer(serve_app, name="serve")
