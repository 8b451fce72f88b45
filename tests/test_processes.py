"""Child processes: start, wait on health (never on sleeps), report early exits, stop or kill."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tuneops.errors import ServiceError
from tuneops.processes import (
    ManagedProcess,
    child_environment,
    free_port,
    spawn_process,
    start_process,
    url_answers,
    wait_until_healthy,
)

# A server that answers 200 on /health only once a marker file exists (or at once without one).
HEALTH_SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
marker = Path(sys.argv[2]) if len(sys.argv) > 2 else None

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.path == "/health" and (marker is None or marker.exists())
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

print("serving", os.environ.get("PROBE_VALUE"), os.environ.get("PROBE_GONE"), flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
# Ignores SIGTERM and starts a grandchild in its process group, then idles.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _server(*args: str) -> tuple[list[str], str]:
    port = free_port()
    return [sys.executable, "-c", HEALTH_SERVER, str(port), *args], f"http://127.0.0.1:{port}"


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _grandchild_pid(managed: ManagedProcess) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = managed.log_path.read_text().strip()
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the child never wrote its grandchild's pid")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_waits_for_health_then_stop_ends_the_child(tmp_path: Path) -> None:
    command, url = _server()
    with start_process(
        "health server", command, url=url, health=f"{url}/health", log_path=tmp_path / "s.log", timeout=60
    ) as managed:
        assert url_answers(f"{url}/health")
    assert managed.process.returncode is not None
    assert not url_answers(f"{url}/health", timeout=0.5)


def test_a_custom_probe_decides_readiness(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    command, url = _server(str(marker))
    managed = spawn_process("probe server", command, url=url, log_path=tmp_path / "p.log")
    probes: list[bool] = []

    def probe() -> bool:
        if len(probes) == 3:
            marker.touch()
        probes.append(url_answers(f"{url}/health"))
        return probes[-1]

    try:
        wait_until_healthy(managed, probe, timeout=60)
        assert probes[-1] and not any(probes[:-1]) and len(probes) >= 4
    finally:
        managed.stop()


def test_an_early_exit_is_reported_at_once_with_the_log_tail(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys, time; time.sleep(0.3); print('port taken'); sys.exit(3)"]
    managed = spawn_process("doomed", command, url="http://127.0.0.1:9", log_path=tmp_path / "d.log")
    started = time.monotonic()
    with pytest.raises(ServiceError, match="doomed exited with code 3") as info:
        wait_until_healthy(managed, "http://127.0.0.1:9/health", timeout=120)
    assert time.monotonic() - started < 30  # noticed by waiting on the child, not at the deadline
    assert "port taken" in info.value.message and str(managed.log_path) in (info.value.hint or "")


def test_a_child_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    command, url = _server(str(tmp_path / "never"))
    managed = spawn_process("never ready", command, url=url, log_path=tmp_path / "n.log")
    with pytest.raises(ServiceError, match=r"did not answer on .* within 1 s"):
        wait_until_healthy(managed, f"{url}/health", timeout=1)
    assert managed.process.poll() is not None


def test_environment_overrides_and_unsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_GONE", "inherited")
    assert child_environment({"PROBE_GONE": None})["PATH"] == os.environ["PATH"]
    assert "PROBE_GONE" not in child_environment({"PROBE_GONE": None})
    assert child_environment({"A": "1"}, base={"B": "2"}) == {"A": "1", "B": "2"}
    command, url = _server()
    log = tmp_path / "e.log"
    log.write_text("earlier run\n")
    with start_process(
        "env server", command, url=url, health=f"{url}/health", log_path=log,
        env={"PROBE_VALUE": "set", "PROBE_GONE": None}, append_log=True, timeout=60,
    ):  # fmt: skip
        pass
    assert log.read_text().splitlines()[:2] == ["earlier run", "serving set None"]


def test_stop_escalates_to_sigkill_and_reaches_the_whole_group(tmp_path: Path) -> None:
    command = [sys.executable, "-c", STUBBORN]
    managed = spawn_process("stubborn", command, url="", log_path=tmp_path / "g.log")
    grandchild = _grandchild_pid(managed)
    managed.stop(timeout=0.5)
    assert managed.process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_single_process_child_is_signalled_alone_and_kill_is_a_crash(tmp_path: Path) -> None:
    command = [sys.executable, "-c", STUBBORN]
    managed = spawn_process("single", command, url="", log_path=tmp_path / "s.log", group=False)
    grandchild = _grandchild_pid(managed)
    try:
        managed.kill()
        assert managed.process.returncode == -signal.SIGKILL
        assert _alive(grandchild)  # only the child was signalled
    finally:
        os.killpg(managed.process.pid, signal.SIGKILL)
