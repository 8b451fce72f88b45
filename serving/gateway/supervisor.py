"""The local service as the gateway's supervised child, started when a served version needs it.

When a champion or challenger in the routing tables is on the ``local`` provider and nothing
answers at the local endpoint, the gateway starts the service there (the project's models dir
as its home, as ``tuneops run`` does), waits until it answers, and starts it again, with backoff,
whenever it exits. A service someone else started is used as is and never stopped; the one the
gateway started is stopped with the gateway. The checks run in a background task, never on a
request: a request that arrives while the service restarts gets the upstream path's usual
failover or OpenAI-shaped 502/504.

:func:`decide` and :class:`RestartPolicy` are the pure decisions; :class:`LocalServiceSupervisor`
does the I/O (probes and stops in threads, so the event loop never waits on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tuneops.errors import ServiceError
from tuneops.processes import wait_until_healthy
from tuneops.serving.local.launcher import answers_openai, spawn_service_for

if TYPE_CHECKING:
    from tuneops.providers import ProviderEndpoint
    from tuneops.serving.gateway.metrics import GatewayMetrics
    from tuneops.serving.gateway.table import RoutingTables
    from tuneops.serving.local.launcher import ServiceProcess
    from tuneops.settings import TuneopsSettings

log = logging.getLogger("tuneops.serving.gateway")


class Step(enum.Enum):
    """What the supervisor does at one check."""

    KEEP = "keep"  # the child it started is running: nothing to do
    IDLE = "idle"  # no served version needs the service
    USE = "use"  # a service it did not start answers: use it, own nothing
    START = "start"  # needed and nothing answers: start one (again, if one exited)
    OCCUPIED = "occupied"  # something else holds the port without answering: leave it alone


def decide(*, needed: bool, child_running: bool, answers: bool, port_taken: bool = False) -> Step:
    """The step for one check, from what the tables need and what runs.

    Args:
        needed: a served version is on the local provider.
        child_running: the service the gateway started is alive.
        answers: something answers OpenAI-style at the local endpoint (only probed when needed).
        port_taken: something accepts connections there (only probed when nothing answers): a
            busy service whose ``/models`` was slow, say. A service started there could not
            listen, so none is.
    """
    if child_running:
        return Step.KEEP
    if not needed:
        return Step.IDLE
    if answers:
        return Step.USE
    return Step.OCCUPIED if port_taken else Step.START


def listens(base_url: str, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at ``base_url``'s host and port."""
    parts = urlsplit(base_url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between starts of a service that keeps exiting or failing to start.

    Attributes:
        first_delay: seconds before the first restart after an exit.
        factor: each further attempt in a row waits this much longer...
        max_delay: ...up to this.
        stable_seconds: a child that answered this long before it exited starts the count afresh.
    """

    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    stable_seconds: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before start attempt ``attempt`` of a streak (1 = the first restart)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, not {attempt}")
        return float(min(self.max_delay, self.first_delay * self.factor ** (attempt - 1)))

    def next_attempt(self, previous: int, answered_seconds: float) -> int:
        """The attempt number due after a child exits that had answered for ``answered_seconds``
        (0 when it never answered) and was itself attempt ``previous`` of its streak."""
        return 1 if answered_seconds >= self.stable_seconds else previous + 1


def serves_local(tables: RoutingTables) -> bool:
    """True when a champion or challenger the tables route to is on the local provider."""
    for model in tables.models:
        table = tables.table(model)
        if table is None:
            continue
        for version in (table.champion, table.challenger):
            upstream = tables.cached_upstream(model, version) if version is not None else None
            endpoint = tables.endpoints.get(upstream.provider) if upstream is not None else None
            if endpoint is not None and endpoint.is_local:
                return True
    return False


class LocalServiceSupervisor:
    """Starts, watches and stops the local service for one gateway process.

    ``launch`` starts the service without waiting (normally :func:`spawn_service_for` on the
    project's settings); ``probe`` says whether something answers at the endpoint, ``port_taken``
    (default :func:`listens`) whether something holds its port all the same.
    """

    def __init__(
        self,
        base_url: str,
        launch: Callable[[], ServiceProcess],
        probe: Callable[[], bool],
        *,
        port_taken: Callable[[], bool] | None = None,
        policy: RestartPolicy | None = None,
        check_seconds: float = 1.0,
        startup_timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self.policy = policy or RestartPolicy()
        self.check_seconds, self.startup_timeout = check_seconds, startup_timeout
        self._launch, self._probe, self._clock = launch, probe, clock
        self._port_taken = port_taken or (lambda: listens(base_url))
        self.child: ServiceProcess | None = None
        self._answered_at: float | None = None  # when the child first answered
        self._attempt = 0  # start attempts in the current streak of exits and failed starts
        self._not_before = 0.0  # no start before this (clock)
        self._seen: Step | None = None  # the last USE or OCCUPIED step logged
        self._gave_up = False
        self._needed: Callable[[], bool] = lambda: False
        self._metrics: GatewayMetrics | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_endpoint(cls, settings: TuneopsSettings, endpoint: ProviderEndpoint) -> LocalServiceSupervisor:
        """The supervisor of the project's local endpoint, starting the service as ``tuneops run`` does."""
        key = endpoint.api_key
        return cls(
            endpoint.base_url,
            lambda: spawn_service_for(settings, endpoint.base_url, api_key=key),
            lambda: answers_openai(endpoint.base_url, key),
        )

    @property
    def owns_service(self) -> bool:
        """True while the gateway has a service child of its own (running or starting)."""
        return self.child is not None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, needed: Callable[[], bool], metrics: GatewayMetrics | None = None) -> None:
        """Check once (starting the service and waiting for it when needed), then keep checking."""
        self._needed, self._metrics = needed, metrics
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="gateway-local-service")

    async def stop(self) -> None:
        """Stop checking; stop the service if (and only if) the gateway started it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        child, self.child = self.child, None
        if child is not None:
            log.warning("stopping the local service the gateway started (pid %d)", child.managed.process.pid)
            await asyncio.to_thread(child.stop)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:  # the supervisor must outlive any one failure
                log.exception("checking the local service failed")

    # -- one check -----------------------------------------------------------------------------

    async def check(self) -> Step | None:
        """One look: notice an exit, then start, use or leave the service. None: backing off."""
        if self._gave_up:
            return None
        needed = self._needed()
        if self.child is not None and self.child.managed.process.poll() is not None:
            self._exited(self.child, needed)
        probing = needed and self.child is None
        answers = probing and await asyncio.to_thread(self._probe)
        taken = probing and not answers and await asyncio.to_thread(self._port_taken)
        step = decide(needed=needed, child_running=self.child is not None, answers=answers, port_taken=taken)
        if step in (Step.USE, Step.OCCUPIED):
            if self._seen is not step:
                log.warning(
                    "using the local service that already answers at %s (left running)"
                    if step is Step.USE
                    else "something holds the port of %s but does not answer; not starting a service there",
                    self.base_url,
                )
            self._seen, self._attempt = step, 0
        elif step is Step.START:
            if self._clock() < self._not_before:
                return None
            self._seen = None
            await self._start()
        return step

    def _exited(self, child: ServiceProcess, needed: bool) -> None:
        code = child.managed.process.returncode
        answered = 0.0 if self._answered_at is None else self._clock() - self._answered_at
        self.child, self._answered_at = None, None
        self._attempt = attempt = self.policy.next_attempt(self._attempt, answered)
        delay = self.policy.delay(attempt)
        self._not_before = self._clock() + delay
        if needed:
            log.warning(
                "local service exited (code %s); restarting in %.1f s (attempt %d)", code, delay, attempt
            )
        else:
            log.warning("local service exited (code %s); no served version needs it now", code)

    async def _start(self) -> None:
        restart = self._attempt > 0
        if not restart:
            log.warning("starting the local service at %s", self.base_url)
        try:  # in the loop, not a thread: a cancel (the gateway stopping) must not orphan a child
            child = self._launch()  # a fork and exec, milliseconds; the wait below is off the loop
        except ServiceError as exc:
            self._gave_up = True
            log.error("cannot start the local service: %s", exc.one_line())
            return
        self.child = child
        if restart and self._metrics is not None:
            self._metrics.local_service_restarts.inc()
        if await self._wait_until_answering(child):
            self._answered_at = self._clock()
            log.warning("the local service answers at %s (pid %d)", self.base_url, child.managed.process.pid)

    async def _wait_until_answering(self, child: ServiceProcess) -> bool:
        """Wait (in a thread) until ``child`` answers. False when it exited first (the next check
        restarts it) or did not answer within ``startup_timeout`` (it is stopped, and so restarted)."""
        try:
            await asyncio.to_thread(wait_until_healthy, child.managed, self._probe, self.startup_timeout)
        except ServiceError as exc:  # its exit code and log tail, once per failed start
            log.warning("%s\n%s", exc.message, exc.hint or "")
            return False
        return True
