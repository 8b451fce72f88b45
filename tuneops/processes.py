"""Child server processes: start in their own session, wait on their health, stop cleanly.

The one place that starts servers as children and waits for them: the local service's launcher,
the project's Prefect server during ``tuneops run``, and the MLflow/Prefect servers of the
at-scale tests. Waiting polls a health endpoint (or a caller's probe) while also waiting on the
child itself, so start-up never pays for a fixed sleep and an early exit is reported at once,
with the tail of the child's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneops.errors import ServiceError

Probe = Callable[[], bool]
# Health checks go straight to the child on 127.0.0.1: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child server process with its base URL and log file.

    ``group`` says where signals go: the child's whole process group (servers that fork workers,
    such as ``mlflow server``), or the child alone (a server that shuts its own work down on
    SIGTERM, such as the local service).
    """

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    group: bool = True

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL whatever is left after ``timeout``."""
        if self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would: nothing gets a chance to clean up."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of the child's log (what to show when it failed to start)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def url_answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET url`` answers 200 (the usual health check)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(
    managed: ManagedProcess, health: str | Probe, timeout: float, *, interval: float = 0.1
) -> None:
    """Block until ``health`` (a URL that must answer 200, or a probe) says the child is ready.

    Between probes this waits on the child itself, so an early exit is noticed at once. A child
    that dies is reported with its exit code and log tail; one that never gets ready is stopped.
    """
    probe = health if callable(health) else lambda: url_answers(health)
    where = "" if callable(health) else f" on {health}"
    deadline = time.monotonic() + timeout
    while True:
        if managed.process.poll() is not None:
            raise ServiceError(
                f"{managed.name} exited with code {managed.process.returncode} while starting:\n"
                f"{managed.log_tail()}",
                hint=f"full log: {managed.log_path}",
            )
        if probe():
            return
        if time.monotonic() > deadline:
            managed.stop(timeout=5.0)
            raise ServiceError(
                f"{managed.name} did not answer{where} within {timeout:.0f} s:\n{managed.log_tail()}",
                hint=f"full log: {managed.log_path}",
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.process.wait(interval)


def child_environment(
    env: Mapping[str, str | None] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``env`` on top; a None value unsets."""
    merged = dict(os.environ if base is None else base)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def spawn_process(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    log_path: Path,
    env: Mapping[str, str | None] | None = None,
    base_env: Mapping[str, str] | None = None,
    append_log: bool = False,
    group: bool = True,
) -> ManagedProcess:
    """Start ``command`` in its own session, logging to ``log_path``; do not wait for it.

    Args:
        env: variables set (or, with a None value, removed) on top of ``base_env``.
        base_env: the environment to start from; default this process's.
        append_log: keep what earlier runs wrote to ``log_path`` (a server restarted on its home).
        group: where :meth:`ManagedProcess.stop` sends its signals (see :class:`ManagedProcess`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append_log else "wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_environment(env, base_env),
            start_new_session=True,
        )
    return ManagedProcess(name=name, url=url, process=process, log_path=log_path, group=group)


def start_process(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    health: str | Probe,
    log_path: Path,
    env: Mapping[str, str | None] | None = None,
    base_env: Mapping[str, str] | None = None,
    append_log: bool = False,
    group: bool = True,
    timeout: float = 120.0,
) -> ManagedProcess:
    """:func:`spawn_process`, then :func:`wait_until_healthy` on ``health``."""
    managed = spawn_process(
        name, command, url=url, log_path=log_path, env=env, base_env=base_env, append_log=append_log,
        group=group,
    )  # fmt: skip
    wait_until_healthy(managed, health, timeout)
    return managed
