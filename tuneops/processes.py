"""Child server processes: start in their own process group, wait on a health URL, stop cleanly.

Used by the CLI (the project's Prefect server during ``tuneops run``) and by the at-scale tests
(``mlflow server``, ``prefect server start``). Waiting is on health endpoints, never on sleeps.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneops.errors import ServiceError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child server process with its base URL and log file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until_healthy(managed: ManagedProcess, health_url: str, timeout: float) -> None:
    """Poll ``health_url`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise ServiceError(
                f"{managed.name} exited with code {managed.process.returncode} while starting:\n"
                f"{managed.log_tail()}"
            )
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    managed.stop()
    raise ServiceError(f"{managed.name} did not become healthy within {timeout:.0f} s:\n{managed.log_tail()}")


def spawn_process(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start ``command`` in its own process group, logging to ``log_path``; do not wait for it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return ManagedProcess(name=name, url=url, process=process, log_path=log_path)


def start_process(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    health_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> ManagedProcess:
    """:func:`spawn_process`, then wait until ``health_url`` answers."""
    managed = spawn_process(name, command, url=url, log_path=log_path, env=env)
    wait_until_healthy(managed, health_url, timeout)
    return managed
