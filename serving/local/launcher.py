"""Start, find and stop the local service as a subprocess.

``running_service`` is what ``tuneops run`` and other stages' tests call: reuse whatever already
answers OpenAI-style at the base URL, or start the service there for the duration of the block.
Starting, waiting on ``/health`` and stopping are :mod:`tuneops.processes`' (no fixed sleeps; an
early exit of the child is reported with the tail of its log).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tuneops.errors import ServiceError
from tuneops.processes import ManagedProcess, free_port, spawn_process, wait_until_healthy
from tuneops.providers import local_service_key
from tuneops.settings import QUIET_ENVIRONMENT, TuneopsSettings

API_KEY_ENV = "TUNEOPS_LOCAL_API_KEY"


@dataclass
class ServiceProcess:
    """A running service child: where it answers and how to stop it."""

    managed: ManagedProcess
    home: Path
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        return self.managed.url

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the worker stops at its next step, state stays resumable), then SIGKILL."""
        self.managed.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing gets a chance to clean up."""
        self.managed.kill()


def answers_openai(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> bool:
    """True when ``GET {base_url}/models`` returns an OpenAI-style model list."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # verify=False for plain http: a verifying client loads the CA bundle on every call, which
    # the gateway's once-a-second supervision probe paid for under load (~10% of the GIL).
    plain = base_url.startswith("http://")
    try:
        response = httpx.get(
            f"{base_url.rstrip('/')}/models", headers=headers, timeout=timeout, verify=not plain
        )
        return response.status_code == 200 and response.json().get("object") == "list"
    except (httpx.HTTPError, ValueError):
        return False


def spawn_service(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    api_key: str | None = None,
    base_model_dirs: Sequence[Path] = (),
    tiny_profile: str | None = None,
    extra_args: Sequence[str] = (),
) -> ServiceProcess:
    """Start ``python -m tuneops.serving.local`` on ``home`` without waiting for it to answer.

    ``tiny_profile`` None leaves the choice to ``TUNEOPS_TINY_PROFILE`` (default: ``default``).
    The key travels in the environment, never on the command line (where ``ps`` would show it).
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    command = [
        sys.executable,
        "-m",
        "tuneops.serving.local",
        "--host",
        host,
        "--port",
        str(port),
        "--home",
        str(home),
        *extra_args,
    ]
    if tiny_profile is not None:
        command += ["--tiny-profile", tiny_profile]
    for folder in base_model_dirs:
        command += ["--base-model-dir", str(folder)]
    managed = spawn_process(
        "the local service",
        command,
        url=f"http://{host}:{port}/v1",
        log_path=home / "service.log",
        env={API_KEY_ENV: api_key or None},
        base_env={**QUIET_ENVIRONMENT, **os.environ},
        append_log=True,  # a restart on the same home keeps the earlier run's log
        group=False,  # SIGTERM to the service alone: it stops its worker at the next step
    )
    return ServiceProcess(managed, home, api_key)


def start_service(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    api_key: str | None = None,
    base_model_dirs: Sequence[Path] = (),
    tiny_profile: str | None = None,
    startup_timeout: float = 120,
    extra_args: Sequence[str] = (),
) -> ServiceProcess:
    """:func:`spawn_service`, then wait until its ``/health`` answers (see :func:`spawn_service`)."""
    service = spawn_service(
        home, host=host, port=port, api_key=api_key, base_model_dirs=base_model_dirs,
        tiny_profile=tiny_profile, extra_args=extra_args,
    )  # fmt: skip
    wait_until_healthy(service.managed, f"{service.root_url}/health", startup_timeout)
    return service


def spawn_service_for(
    settings: TuneopsSettings, base_url: str, *, api_key: str | None = None
) -> ServiceProcess:
    """Start (without waiting) the service that should answer at ``base_url``, as ``tuneops run`` does.

    Its home is ``settings.models_dir`` and its key ``api_key`` or the settings' local key; it
    listens on the URL's host and port, which must be this machine's.

    Raises:
        ServiceError: ``base_url`` is not ``http://127.0.0.1:<port>`` (or localhost).
    """
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ServiceError(
            f"nothing answers at {base_url} and the local service can only be started on "
            "http://127.0.0.1:<port>",
            hint="start the provider or fix its base_url",
        )
    return spawn_service(
        settings.models_dir,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 80,
        api_key=api_key or local_service_key(settings),
    )


@contextlib.contextmanager
def running_service(
    settings: TuneopsSettings, base_url: str, *, api_key: str | None = None, startup_timeout: float = 120
) -> Iterator[str]:
    """Yield ``base_url`` with an OpenAI-compatible service answering there.

    If something already answers (``GET {base_url}/models``), it is used as is. Otherwise the
    local service is started on the URL's host and port with ``settings.models_dir`` as its home
    (:func:`spawn_service_for`), and stopped (SIGTERM, then kill) when the block ends.
    """
    key = api_key or local_service_key(settings)
    if answers_openai(base_url, key):
        yield base_url
        return
    service = spawn_service_for(settings, base_url, api_key=key)
    wait_until_healthy(service.managed, f"{service.root_url}/health", startup_timeout)
    try:
        yield base_url
    finally:
        service.stop()
