"""The gateway's supervision of the local service: the pure decisions, then the supervisor itself
over real child processes (a small stand-in server that answers ``GET /v1/models``; the real
service behind a real gateway is in ``test_local_service_supervision.py``)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving.gateway.conftest import MODEL, Harness, run
from tuneops.errors import ServiceError
from tuneops.processes import free_port, spawn_process, wait_until_healthy
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.serving.gateway.metrics import GatewayMetrics
from tuneops.serving.gateway.supervisor import (
    LocalServiceSupervisor,
    RestartPolicy,
    Step,
    decide,
    serves_local,
)
from tuneops.serving.local.launcher import ServiceProcess, answers_openai

# -- the pure decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("needed", "child_running", "answers", "port_taken", "step"),
    [
        (False, False, False, False, Step.IDLE),
        (False, True, False, False, Step.KEEP),  # ours keeps running when no version needs it any more
        (True, True, True, False, Step.KEEP),
        (True, False, True, True, Step.USE),  # someone else's service: used, not owned
        (True, False, False, False, Step.START),
        (True, False, False, True, Step.OCCUPIED),  # a service started there could not listen
    ],
)
def test_decide(needed: bool, child_running: bool, answers: bool, port_taken: bool, step: Step) -> None:
    assert decide(needed=needed, child_running=child_running, answers=answers, port_taken=port_taken) is step


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(first_delay=0.5, factor=2.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="count from 1"):
        policy.delay(0)


def test_a_child_that_ran_long_enough_starts_the_count_afresh() -> None:
    policy = RestartPolicy(stable_seconds=60.0)
    assert policy.next_attempt(0, 0.0) == 1  # the first exit
    assert policy.next_attempt(3, 0.0) == 4  # it never answered: the streak goes on
    assert policy.next_attempt(3, 59.9) == 4
    assert policy.next_attempt(3, 60.0) == 1  # it served for a minute: a new streak


def test_serves_local_follows_the_champion_and_challenger(
    gateway_factory: Callable[..., Harness], claims: RegistryStore
) -> None:
    tables = gateway_factory().gateway.tables
    assert not serves_local(tables)  # nothing loaded yet
    tables.refresh()
    assert serves_local(tables)  # claims-triage v1 (champion) and v2 (challenger) are local
    cloud = claims.create_version(
        MODEL, f"{claims.artifact_root}/cloud", "",
        {"tuneops.provider": "openai", "tuneops.endpoint_model": "ft:gpt-4o-mini:claims"}, "", None,
    )  # fmt: skip
    claims.set_alias(MODEL, "champion", cloud.version)
    claims.set_alias(MODEL, "challenger", None)
    tables.refresh()
    assert not serves_local(tables)  # only an OpenAI version is served
    claims.set_alias(MODEL, "challenger", "2")
    tables.refresh()
    assert serves_local(tables)


# -- the supervisor over real processes ----------------------------------------------------------

STAND_IN = """
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": []} if self.path == "/v1/models" else {}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class StandIns:
    """Launches stand-in services on one port, as the supervisor's ``launch`` would."""

    def __init__(self, home: Path, script: str = STAND_IN) -> None:
        self.home, self.script = home, script
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.launched: list[ServiceProcess] = []

    def launch(self) -> ServiceProcess:
        managed = spawn_process(
            "stand-in", [sys.executable, "-c", self.script, str(self.port)], url=self.base_url,
            log_path=self.home / "stand-in.log", append_log=True, group=False,
        )  # fmt: skip
        service = ServiceProcess(managed, self.home)
        self.launched.append(service)
        return service

    def answers(self) -> bool:
        return answers_openai(self.base_url, timeout=0.5)

    def supervisor(self, **options: object) -> LocalServiceSupervisor:
        return LocalServiceSupervisor(self.base_url, self.launch, self.answers, **options)

    def stop_all(self) -> None:
        for service in self.launched:
            service.stop(5)


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[StandIns]:
    made = StandIns(tmp_path)
    yield made
    made.stop_all()


async def eventually(condition: Callable[[], bool], seconds: float) -> bool:
    for _ in range(int(seconds / 0.1)):
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(0.1)
    return False


def test_starts_when_needed_restarts_after_kill_9_and_stops_its_child(
    stand_ins: StandIns, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = GatewayMetrics()

    async def scenario() -> None:
        supervisor = stand_ins.supervisor(check_seconds=0.1, policy=RestartPolicy(first_delay=0.2))
        await supervisor.start(lambda: True, metrics)
        assert supervisor.owns_service and stand_ins.answers()  # waited until it answered
        first = stand_ins.launched[0]
        first.kill()  # SIGKILL, as a crash would
        assert await eventually(lambda: len(stand_ins.launched) == 2 and stand_ins.answers(), 20)
        second = stand_ins.launched[1]
        assert supervisor.child is second
        await supervisor.stop()
        assert second.managed.process.poll() is not None  # the child it started is stopped
        assert not stand_ins.answers()

    with caplog.at_level(logging.WARNING, "tuneops.serving.gateway"):
        run(scenario())
    assert "local service exited (code -9); restarting in 0.2 s (attempt 1)" in caplog.text
    assert metrics.local_service_restarts._value.get() == 1


def test_a_service_that_already_answers_is_used_and_left_running(stand_ins: StandIns) -> None:
    theirs = stand_ins.launch()
    wait_until_healthy(theirs.managed, stand_ins.answers, 20)

    async def scenario() -> None:
        supervisor = stand_ins.supervisor(check_seconds=0.1)
        await supervisor.start(lambda: True)
        assert not supervisor.owns_service
        theirs.kill()  # theirs dies: now nothing answers, so the supervisor starts its own
        assert await eventually(lambda: len(stand_ins.launched) == 2 and stand_ins.answers(), 20)
        assert supervisor.owns_service
        await supervisor.stop()

    run(scenario())
    assert stand_ins.launched[1].managed.process.poll() is not None


def test_a_service_it_did_not_start_survives_the_supervisors_stop(stand_ins: StandIns) -> None:
    theirs = stand_ins.launch()
    wait_until_healthy(theirs.managed, stand_ins.answers, 20)

    async def scenario() -> None:
        supervisor = stand_ins.supervisor(check_seconds=0.1)
        await supervisor.start(lambda: True)
        await asyncio.sleep(0.3)  # a few checks
        await supervisor.stop()

    run(scenario())
    assert len(stand_ins.launched) == 1 and stand_ins.answers()


def test_nothing_is_started_on_a_port_something_else_holds(stand_ins: StandIns) -> None:
    blocker = socket.socket()  # accepts connections (the kernel's backlog), never answers
    blocker.bind(("127.0.0.1", stand_ins.port))
    blocker.listen()
    supervisor = stand_ins.supervisor()
    supervisor._needed = lambda: True

    async def scenario() -> list[Step | None]:
        steps = [await supervisor.check(), await supervisor.check()]
        blocker.close()
        steps.append(await supervisor.check())
        return steps

    try:
        assert run(scenario()) == [Step.OCCUPIED, Step.OCCUPIED, Step.START]
    finally:
        blocker.close()
        run(supervisor.stop())
    assert len(stand_ins.launched) == 1


def test_nothing_is_started_while_no_served_version_needs_it(stand_ins: StandIns) -> None:
    needed = False

    async def scenario() -> None:
        supervisor = stand_ins.supervisor(check_seconds=0.1)
        await supervisor.start(lambda: needed)
        await asyncio.sleep(0.3)
        assert stand_ins.launched == []
        await supervisor.stop()

    run(scenario())


def test_a_service_that_keeps_exiting_is_restarted_with_growing_delays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashing = StandIns(tmp_path, script="import sys; sys.exit(3)")
    now = [0.0]
    supervisor = crashing.supervisor(
        clock=lambda: now[0], policy=RestartPolicy(first_delay=1.0, max_delay=4.0)
    )
    supervisor._needed = lambda: True  # checks driven one by one, no background loop

    async def scenario() -> list[Step | None]:
        steps = [await supervisor.check()]  # starts; the child exits while it is awaited
        # the delay counts from the check that saw the exit (advance 0), so just short of it: none
        for advance in (0, 0.75, 0.25, 0, 1.75, 0.25, 0, 3.75, 0.25, 0, 4):
            now[0] += advance
            steps.append(await supervisor.check())
        return steps

    with caplog.at_level(logging.WARNING, "tuneops.serving.gateway"):
        steps = run(scenario())
    # each exit pushes the next start out by the backoff: 1 s, 2 s, 4 s, then the 4 s cap
    started, waiting = Step.START, None
    assert steps == [started, *[waiting, waiting, started] * 3, waiting, started]
    assert len(crashing.launched) == 5
    assert [line for line in caplog.messages if "restarting in" in line] == [
        f"local service exited (code 3); restarting in {delay:.1f} s (attempt {n})"
        for n, delay in enumerate((1.0, 2.0, 4.0, 4.0), start=1)
    ]
    assert sum("stand-in exited with code 3 while starting" in m for m in caplog.messages) == 5


def test_a_service_that_never_answers_is_stopped_and_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silent = StandIns(tmp_path, script="import time; time.sleep(600)")
    supervisor = silent.supervisor(startup_timeout=1.0, policy=RestartPolicy(first_delay=0.0))
    supervisor._needed = lambda: True

    async def scenario() -> list[Step | None]:
        return [await supervisor.check(), await supervisor.check()]

    with caplog.at_level(logging.WARNING, "tuneops.serving.gateway"):
        try:
            steps = run(scenario())
        finally:
            silent.stop_all()
    assert steps == [Step.START, Step.START]
    assert silent.launched[0].managed.process.returncode is not None  # stopped after 1 s
    assert sum("did not answer within 1 s" in m for m in caplog.messages) == 2
    assert "restarting in 0.0 s (attempt 1)" in caplog.text


def test_an_endpoint_it_cannot_start_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    def launch() -> ServiceProcess:
        raise ServiceError("nothing answers at http://models.example/v1 and the local service can only ...")

    supervisor = LocalServiceSupervisor("http://models.example/v1", launch, lambda: False)
    supervisor._needed = lambda: True

    async def scenario() -> None:
        await supervisor.check()
        await supervisor.check()

    with caplog.at_level(logging.WARNING, "tuneops.serving.gateway"):
        run(scenario())
    assert [m for m in caplog.messages if "cannot start" in m] == [
        "cannot start the local service: nothing answers at http://models.example/v1 and the local "
        "service can only ..."
    ]


def test_stopping_while_a_restart_waits_for_the_service_stops_that_child(tmp_path: Path) -> None:
    silent = StandIns(tmp_path, script="import time; time.sleep(600)")
    supervisor = silent.supervisor(check_seconds=0.05, startup_timeout=60)

    async def scenario() -> None:
        await supervisor.start(lambda: False)  # nothing needed yet: the loop runs idle
        supervisor._needed = lambda: True  # now a check starts the service and waits on it
        while not silent.launched:
            await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await supervisor.stop()
        assert asyncio.get_running_loop().time() - started < 10  # not the 60 s start-up wait

    try:
        run(scenario())
        assert len(silent.launched) == 1
        assert silent.launched[0].managed.process.returncode is not None
    finally:
        silent.stop_all()
